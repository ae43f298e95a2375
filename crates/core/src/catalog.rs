//! The image catalog: named images banger knows how to get, compiled into
//! the binary (`catalog.toml` beside this crate) and optionally extended
//! by a file from config. An entry is a build recipe or a bundle URL with
//! its sha256.

use serde::Deserialize;

use crate::names::validate_name;

/// The catalog shipped in the binary.
pub const EMBEDDED: &str = include_str!("../catalog.toml");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("bad catalog {origin}: {message}")]
    Parse { origin: String, message: String },
}

/// How an image is made on this host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecipe {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Packages beyond the base set.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// A bundle to download.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSource {
    pub url: String,
    /// sha256 of the bundle file, lowercase hex.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    Build(BuildRecipe),
    Bundle(BundleSource),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    pub recipe: Recipe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    image: Vec<EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    #[serde(default)]
    description: String,
    build: Option<BuildRecipe>,
    url: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The embedded catalog.
    pub fn embedded() -> Catalog {
        Catalog::parse(EMBEDDED, "embedded catalog").unwrap_or_default()
    }

    /// Parses catalog text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let bad = |message: String| CatalogError::Parse {
            origin: origin.to_string(),
            message,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for entry in file.image {
            validate_name(&entry.name).map_err(|e| bad(e.to_string()))?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(bad(format!("{} is listed twice", entry.name)));
            }
            let recipe = match (entry.build, entry.url) {
                (Some(build), None) if entry.sha256.is_none() => Recipe::Build(build),
                (None, Some(url)) => {
                    // A catalog entry is trusted by name: its bytes must be pinned.
                    let Some(sha) = &entry.sha256 else {
                        return Err(bad(format!(
                            "{}: a bundle entry needs the sha256 of its bundle",
                            entry.name
                        )));
                    };
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad(format!("{}: sha256 must be 64 hex digits", entry.name)));
                    }
                    Recipe::Bundle(BundleSource {
                        url,
                        sha256: entry.sha256.map(|s| s.to_lowercase()),
                    })
                }
                _ => {
                    return Err(bad(format!(
                        "{}: give either build = {{ suite = ... }} or url (+ sha256)",
                        entry.name
                    )))
                }
            };
            entries.push(CatalogEntry {
                name: entry.name,
                description: entry.description,
                recipe,
            });
        }
        Ok(Catalog { entries })
    }

    /// This catalog with `other`'s entries added; `other` wins on a name.
    pub fn merged(mut self, other: Catalog) -> Catalog {
        for entry in other.entries {
            self.entries.retain(|e| e.name != entry.name);
            self.entries.push(entry);
        }
        self
    }

    pub fn find(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_holds_the_default_image() {
        let catalog = Catalog::parse(EMBEDDED, "embedded").unwrap();
        let entry = catalog.find("debian-bookworm").unwrap();
        assert_eq!(
            entry.recipe,
            Recipe::Build(BuildRecipe {
                suite: "bookworm".into(),
                packages: vec![]
            })
        );
    }

    #[test]
    fn bundles_need_a_well_formed_digest_and_one_recipe() {
        let ok = Catalog::parse(
            "[[image]]\nname = \"x\"\nurl = \"http://h/x.tar.zst\"\nsha256 = \"AB\"\n",
            "t",
        );
        assert!(ok.unwrap_err().to_string().contains("64 hex digits"));
        let unpinned = Catalog::parse(
            "[[image]]\nname = \"x\"\nurl = \"http://h/x.tar.zst\"\n",
            "t",
        );
        assert!(unpinned
            .unwrap_err()
            .to_string()
            .contains("x: a bundle entry needs the sha256 of its bundle"));
        let both = Catalog::parse(
            "[[image]]\nname = \"x\"\nurl = \"u\"\nbuild = { suite = \"bookworm\" }\n",
            "t",
        );
        assert!(both.unwrap_err().to_string().contains("either"));
        let pin = format!("sha256 = \"{}\"\n", "a".repeat(64));
        let bad_name = Catalog::parse(
            &format!("[[image]]\nname = \"X!\"\nurl = \"u\"\n{pin}"),
            "t",
        );
        assert!(bad_name.is_err());
        let twice = Catalog::parse(
            &format!("[[image]]\nname = \"a\"\nurl = \"u\"\n{pin}[[image]]\nname = \"a\"\nurl = \"v\"\n{pin}"),
            "t",
        );
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn merged_entries_override_by_name() {
        let extra = Catalog::parse(
            &format!(
                "[[image]]\nname = \"debian-bookworm\"\nurl = \"http://127.0.0.1/b.tar.zst\"\nsha256 = \"{}\"\n",
                "b".repeat(64)
            ),
            "extra",
        )
        .unwrap();
        let catalog = Catalog::embedded().merged(extra);
        assert!(matches!(
            catalog.find("debian-bookworm").unwrap().recipe,
            Recipe::Bundle(_)
        ));
        assert_eq!(catalog.entries().len(), 1);
    }
}
