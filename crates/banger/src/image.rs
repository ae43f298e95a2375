//! `banger image ...`.

use anyhow::Result;
use banger_proto::image::{Image, ImageList};
use clap::Subcommand;

use crate::client::Client;
use crate::output;
use crate::vm::path_segment;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one image.
    Show {
        /// Image name or id.
        image: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Ls { json } => {
            let list: ImageList = client.get("/v1/images").await?;
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .images
                .iter()
                .map(|i| {
                    let seed = if i.work_seed_path.is_some() {
                        "yes"
                    } else {
                        "no"
                    };
                    vec![
                        i.name.clone(),
                        i.source.clone(),
                        seed.into(),
                        i.created_at.clone(),
                        i.id.clone(),
                    ]
                })
                .collect();
            output::table(&["NAME", "SOURCE", "WORK SEED", "CREATED", "ID"], &rows);
        }
        ImageCommand::Show { image, json } => {
            let image: Image = client
                .get(&format!("/v1/images/{}", path_segment(&image)))
                .await?;
            if json {
                return output::json(&image);
            }
            let none = || "-".to_string();
            for (key, value) in [
                ("name", image.name.clone()),
                ("id", image.id.clone()),
                ("source", image.source.clone()),
                ("kernel", image.kernel_path.clone()),
                ("initrd", image.initrd_path.clone().unwrap_or_else(none)),
                ("rootfs", image.rootfs_path.clone()),
                (
                    "work seed",
                    image.work_seed_path.clone().unwrap_or_else(none),
                ),
                ("created", image.created_at.clone()),
            ] {
                println!("{:<11} {value}", format!("{key}:"));
            }
        }
    }
    Ok(())
}
