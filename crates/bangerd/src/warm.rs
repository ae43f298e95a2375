//! Warm templates made in the background: after the first cold create of
//! an image, its template is made (`Banger::warm_image`) so the next
//! create of that image restores instead of booting. One template per
//! image at a time; a failure is logged and the next cold create tries
//! again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use banger_core::vm::Vm;
use banger_core::Banger;

pub struct Warmer {
    banger: Arc<Banger>,
    busy: Mutex<HashSet<String>>,
}

impl Warmer {
    pub fn new(banger: Arc<Banger>) -> Arc<Self> {
        Arc::new(Warmer {
            banger,
            busy: Mutex::default(),
        })
    }

    /// Starts making the template of `vm`'s image when `vm` was booted
    /// cold and the image has none.
    pub fn after_create(self: &Arc<Self>, vm: &Vm) {
        let booted = vm.create_stages.iter().any(|s| s.name == "vmm_start");
        if !booted || !self.banger.template_wanted(&vm.image_id) {
            return;
        }
        let image = vm.image_id.clone();
        if !self.lock().insert(image.clone()) {
            return;
        }
        let warmer = self.clone();
        tokio::spawn(async move {
            match warmer.banger.warm_image(&image).await {
                Ok(template) => tracing::info!(template = %template.name, "warm template ready"),
                Err(err) => {
                    tracing::warn!(image = %image, error = %err, "cannot make the warm template")
                }
            }
            warmer.lock().remove(&image);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}
