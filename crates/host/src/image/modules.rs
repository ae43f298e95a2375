//! Kernel modules a guest needs before its root is mounted: the virtio
//! transport and devices, vsock and overlayfs, with their dependencies in
//! load order, read from a kernel's `lib/modules/<version>` tree
//! (`modules.dep`, made with `depmod` when missing; built-in modules are
//! skipped).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("depmod failed for {version}: {detail}")]
    Depmod { version: String, detail: String },
    #[error("kernel module {0} is neither built in nor in modules.dep")]
    Missing(String),
    /// `modules.dep` names a file outside its tree.
    #[error("modules.dep names {path}, which is not a path inside lib/modules/{version}")]
    Unsafe { path: String, version: String },
}

/// Whether `name` is a single plain path component (a kernel release, a
/// file name): not empty, no `/`, not `.` or `..`.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Whether `path` (from `modules.dep`) stays inside the modules tree:
/// relative, every component plain.
fn inside_tree(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && path.split('/').all(plain_name)
}

/// What the guest init loads, by module name.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
    // Shared folders (loaded only when a VM has some).
    "virtiofs",
];

/// A module's name from its path: the file stem, `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Reads `modules.dep`: module name -> (its path, the paths it needs).
fn read_deps(dir: &Path) -> Result<HashMap<String, (String, Vec<String>)>, ModulesError> {
    let path = dir.join("modules.dep");
    let text = std::fs::read_to_string(&path).map_err(|source| ModulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut deps = HashMap::new();
    let version = dir
        .file_name()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    for line in text.lines() {
        let Some((module, needs)) = line.split_once(':') else {
            continue;
        };
        let needs: Vec<String> = needs.split_whitespace().map(String::from).collect();
        let module = module.trim();
        // The file names come from the image: each must stay in its tree.
        if let Some(bad) = std::iter::once(module)
            .chain(needs.iter().map(String::as_str))
            .find(|path| !inside_tree(path))
        {
            return Err(ModulesError::Unsafe {
                path: bad.to_string(),
                version,
            });
        }
        deps.insert(module_name(module), (module.to_string(), needs));
    }
    Ok(deps)
}

fn read_builtin(dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
        .map(|text| text.lines().map(module_name).collect())
        .unwrap_or_default()
}

/// Runs `depmod` for the tree when it has no `modules.dep`.
pub fn ensure_depmod(root: &Path, version: &str) -> Result<(), ModulesError> {
    let dir = root.join("lib/modules").join(version);
    if dir.join("modules.dep").exists() {
        return Ok(());
    }
    let out =
        std::process::Command::new(crate::tools::find_tool("depmod").unwrap_or("depmod".into()))
            .arg("-b")
            .arg(root)
            .arg(version)
            .output()
            .map_err(|e| ModulesError::Depmod {
                version: version.into(),
                detail: e.to_string(),
            })?;
    if !out.status.success() {
        return Err(ModulesError::Depmod {
            version: version.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The module files (relative to `dir`, the `lib/modules/<version>`
/// directory) that give `wanted`, dependencies first.
pub fn resolve(dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, ModulesError> {
    let deps = read_deps(dir)?;
    let builtin = read_builtin(dir);
    let mut order: Vec<PathBuf> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    for name in wanted {
        if builtin.contains(*name) {
            continue;
        }
        visit(name, &deps, &mut done, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    done: &mut HashSet<String>,
    order: &mut Vec<PathBuf>,
) -> Result<(), ModulesError> {
    if done.contains(name) {
        return Ok(());
    }
    let (path, needs) = deps
        .get(name)
        .ok_or_else(|| ModulesError::Missing(name.to_string()))?;
    done.insert(name.to_string());
    for need in needs {
        visit(&module_name(need), deps, done, order)?;
    }
    order.push(PathBuf::from(path));
    Ok(())
}

/// Modules that register virtio devices (not drivers of them).
const VIRTIO_TRANSPORTS: &[&str] = &["virtio_mmio", "virtio_pci"];

/// The modules of `order` (as `resolve` gives them) in groups that can
/// load at the same time: a module's group comes after the groups of all
/// it depends on. banger-init loads each group concurrently, which
/// overlaps the waits inside the kernel's module loading.
pub fn groups(dir: &Path, order: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>, ModulesError> {
    let deps = read_deps(dir)?;
    let mut depth: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    // The virtio transports register their devices before any virtio
    // driver loads, so drivers bind in device order: `/dev/vda`, `vdb`,
    // `vdc` follow the machine's drive order (a disk driver loading
    // while the transport registers devices would name them at random).
    let mut after_transports = 0;
    for path in order {
        let name = module_name(&path.display().to_string());
        let needs: &[String] = deps.get(&name).map_or(&[], |(_, needs)| needs);
        let mut level = needs
            .iter()
            .filter_map(|need| depth.get(&module_name(need)))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        let virtio_driver = needs.iter().any(|need| module_name(need) == "virtio");
        if VIRTIO_TRANSPORTS.contains(&name.as_str()) {
            after_transports = after_transports.max(level + 1);
        } else if virtio_driver {
            level = level.max(after_transports);
        }
        depth.insert(name, level);
        if groups.len() <= level {
            groups.resize(level + 1, Vec::new());
        }
        groups[level].push(path.clone());
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `groups` as module names.
    fn group_names(dir: &Path, order: &[PathBuf]) -> Vec<Vec<String>> {
        groups(dir, order)
            .unwrap()
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| module_name(&p.display().to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn virtio_drivers_load_after_the_transport_so_disks_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/fs/overlayfs/overlay.ko:\n",
        )
        .unwrap();
        let order = resolve(dir.path(), &["virtio_mmio", "virtio_blk", "overlay"]).unwrap();
        let names: Vec<Vec<String>> = group_names(dir.path(), &order);
        assert_eq!(
            names,
            [
                vec!["virtio_ring", "overlay"],
                vec!["virtio"],
                vec!["virtio_mmio"],
                vec!["virtio_blk"]
            ]
        );
    }

    #[test]
    fn dependencies_load_first_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        let order = resolve(dir.path(), &["virtio_net", "virtio_rng", "ext4"]).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| module_name(&p.display().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio_net",
                "virtio_rng"
            ]
        );
        let groups: Vec<Vec<String>> = group_names(dir.path(), &order);
        assert_eq!(
            groups,
            [
                vec!["failover", "virtio_ring"],
                vec!["net_failover", "virtio_rng"],
                vec!["virtio_net"]
            ]
        );
        assert!(matches!(
            resolve(dir.path(), &["nope"]),
            Err(ModulesError::Missing(name)) if name == "nope"
        ));
    }

    #[test]
    fn modules_dep_cannot_name_a_file_outside_its_tree() {
        for bad in [
            "kernel/../../../../etc/shadow.ko:",
            "/etc/shadow.ko:",
            "kernel/virtio_blk.ko: ../../../../etc/shadow.ko",
            "kernel//virtio_blk.ko:",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let modules = dir.path().join("6.1.0-test");
            std::fs::create_dir(&modules).unwrap();
            std::fs::write(modules.join("modules.dep"), format!("{bad}\n")).unwrap();
            let err = resolve(&modules, &["virtio_blk"]).unwrap_err().to_string();
            assert!(
                err.starts_with("modules.dep names ")
                    && err.ends_with("inside lib/modules/6.1.0-test"),
                "{bad}: {err}"
            );
        }
    }
}
