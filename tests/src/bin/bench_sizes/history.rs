//! A generated fleet-configuration repository and its history, deterministic from a seed.
//!
//! The tree looks like a real GitOps monorepo for device fleets: `services/<team>/<name>/`
//! (Kubernetes-style manifests, TOML/JSON config, source, scripts, docs, a few image
//! assets), `sites/<region>/<site>/` (device inventories, network config, per-service
//! overrides, calibration tables), `docs/`, `data/`, `vendor/`, `certs/` and a few
//! firmware images. Each later commit changes what such a repository's commits change: a
//! focused edit of a few to a few dozen files, files added, removed and renamed, now and
//! then a new service, an image-tag bump across every deployment or a firmware point
//! release.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::content::{self, Kind, Lang, MODELS, TEAMS, WORDS};
use crate::manifests;
use crate::rng::Rng;

/// One file of the tree.
#[derive(Debug, Clone)]
pub struct File {
    /// How it changes.
    pub kind: Kind,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Mode 100755 rather than 100644.
    pub executable: bool,
}

#[derive(Debug, Clone)]
struct Service {
    dir: String,
    name: String,
    team: String,
    version: (usize, usize, usize),
}

/// The repository's current tree, the generator's memory of its layout, and the paths
/// changed since the work tree was last written.
#[derive(Debug)]
pub struct History {
    rng: Rng,
    files: BTreeMap<String, File>,
    services: Vec<Service>,
    sites: Vec<String>,
    firmware: Vec<Firmware>,
    touched: BTreeSet<String>,
}

/// What [`History::commit`] changed, for the commit message and the report.
#[derive(Debug, Default, Clone)]
pub struct ChangeSummary {
    /// One-line description.
    pub what: String,
    /// Files edited in place.
    pub edited: usize,
    /// Files added.
    pub added: usize,
    /// Files removed.
    pub removed: usize,
    /// Files renamed (possibly with an edit).
    pub renamed: usize,
}

impl History {
    /// The first commit's tree: `files` files from `seed`.
    pub fn new(seed: u64, files: usize) -> History {
        let mut h = History {
            rng: Rng::new(seed),
            files: BTreeMap::new(),
            services: Vec::new(),
            sites: Vec::new(),
            firmware: Vec::new(),
            touched: BTreeSet::new(),
        };
        let mut rng = h.rng.fork(1);
        // Two images keep one path across versions; one carries its version in its name.
        for (i, model) in MODELS.iter().take(3).enumerate() {
            let firmware = Firmware { model: model.to_string(), version: 1, versioned_name: i == 1 };
            let size = rng.range(512 << 10, 1536 << 10);
            let image = content::firmware(&mut rng, model, "1.0.1", size);
            h.put(&firmware.path(), Kind::Firmware, image, false);
            h.put(&firmware.release_path(), Kind::Text, firmware.release_toml(&mut rng), false);
            h.firmware.push(firmware);
        }
        h.put("certs/ca-bundle.pem", Kind::Text, (0..60).map(|_| content::pem(&mut rng)).collect::<String>(), false);
        // Shares of the file count, in the order the generator fills them.
        let budget = |share: usize| files * share / 100;
        while h.files.len() < budget(55) {
            h.add_service(&mut rng);
        }
        while h.files.len() < budget(82) {
            h.add_site(&mut rng);
        }
        while h.files.len() < budget(89) {
            let path = format!("docs/{}/{}.md", rng.word(&WORDS[40..]), content::ident(&mut rng).replace('_', "-"));
            let size = rng.size(6_000, 800, 40_000);
            let title = content::sentence(&mut rng);
            h.put(&path, Kind::Text, content::markdown(&mut rng, &title, size), false);
        }
        while h.files.len() < budget(93) {
            let domain = rng.word(&WORDS[200..]).to_string();
            let (path, text) = if rng.chance(0.6) {
                let size = rng.size(20_000, 2_000, 150_000);
                (format!("data/{domain}/{}.csv", content::ident(&mut rng)), content::csv(&mut rng, size))
            } else {
                let size = rng.size(6_000, 500, 60_000);
                (format!("data/{domain}/{}.json", content::ident(&mut rng)), content::json(&mut rng, size))
            };
            h.put(&path, Kind::Text, text, false);
        }
        let libs: Vec<String> = (0..8).map(|_| content::ident(&mut rng).replace('_', "-")).collect();
        while h.files.len() < budget(99) {
            let lib = rng.pick(&libs).clone();
            let lang = *rng.pick(&[Lang::Python, Lang::Rust, Lang::Go]);
            let sub = if rng.chance(0.5) { format!("/{}", rng.word(&WORDS[60..])) } else { String::new() };
            let path = format!("vendor/{lib}/src{sub}/{}.{}", content::ident(&mut rng), lang.ext());
            let size = rng.size(8_000, 500, 80_000);
            h.put(&path, Kind::Text, content::source(&mut rng, lang, size), false);
        }
        while h.files.len() < files {
            let site = h.sites.get(rng.below(h.sites.len())).and_then(|s| s.rsplit('/').next()).unwrap_or("site");
            let path = format!("certs/devices/{site}-{}.pem", rng.hex(6));
            h.put(&path, Kind::Text, content::pem(&mut rng), false);
        }
        h
    }

    /// Number of files and total bytes of the current tree.
    pub fn size(&self) -> (usize, u64) {
        (self.files.len(), self.files.values().map(|f| f.data.len() as u64).sum())
    }

    /// Bytes of the current tree in text files and in binary ones.
    pub fn text_and_binary_bytes(&self) -> (u64, u64) {
        let text = self.files.values().filter(|f| f.kind == Kind::Text).map(|f| f.data.len() as u64).sum();
        (text, self.size().1 - text)
    }

    /// Changes the tree as commit number `n` (2 and up) of a history of `total` commits.
    pub fn commit(&mut self, n: usize, total: usize) -> ChangeSummary {
        let mut rng = self.rng.fork(n as u64 + 1000);
        let mut summary = ChangeSummary::default();
        if n == total / 2 {
            // Every service moves to a new image tag (a platform-wide rebuild).
            for s in self.services.clone() {
                let old = format!(":{}.{}.{}\n", s.version.0, s.version.1, s.version.2);
                let version = (s.version.0, s.version.1 + 1, 0);
                let new = format!(":{}.{}.{}\n", version.0, version.1, version.2);
                let path = format!("{}/deploy/deployment.yaml", s.dir);
                if let Some(file) = self.files.get(&path) {
                    let text = String::from_utf8_lossy(&file.data).replace(&old, &new);
                    self.put(&path, Kind::Text, text, false);
                    summary.edited += 1;
                }
                if let Some(svc) = self.services.iter_mut().find(|x| x.dir == s.dir) {
                    svc.version = version;
                }
            }
            summary.what = "bump every service image".into();
            return summary;
        }
        if n == total * 2 / 3 {
            let before = self.files.len();
            let name = self.add_service(&mut rng);
            summary.added = self.files.len() - before;
            summary.what = format!("add service {name}");
            return summary;
        }
        if n % 8 == 1 && !self.firmware.is_empty() {
            // A firmware point release: the image is patched (and renamed, if its name
            // carries the version), its release notes updated.
            let i = (n / 8 - 1) % self.firmware.len();
            let old = self.firmware[i].clone();
            if let Some(mut file) = self.remove(&old.path()) {
                content::patch_firmware(&mut rng, &mut file.data);
                let new = Firmware { version: old.version + 1, ..old.clone() };
                self.put(&new.path(), Kind::Firmware, file.data, false);
                self.put(&new.release_path(), Kind::Text, new.release_toml(&mut rng), false);
                summary.edited += 1;
                if new.path() != old.path() {
                    summary.renamed += 1;
                    summary.what = format!("firmware {} 1.0.{}, renamed by version", new.model, new.version);
                } else {
                    summary.edited += 1;
                    summary.what = format!("firmware {} 1.0.{}, same path", new.model, new.version);
                }
                self.firmware[i] = new;
            }
        }

        // An ordinary change: focused on one or two services or sites, with strays.
        let mut focus: Vec<String> = (0..rng.range(1, 2))
            .map(|_| if rng.chance(0.6) { rng.pick(&self.services).dir.clone() } else { rng.pick(&self.sites).clone() })
            .collect();
        focus.dedup();
        let edits = 3 + rng.skewed(30);
        for _ in 0..edits {
            let prefix = if rng.chance(0.7) { Some(rng.pick(&focus).clone()) } else { None };
            if let Some(path) = self.random_path(&mut rng, prefix.as_deref(), |f| f.kind != Kind::Firmware) {
                let Some(file) = self.files.get(&path) else { continue };
                let (kind, executable) = (file.kind, file.executable);
                let data = match kind {
                    Kind::Blob => content::blob(&mut rng, file.data.len()),
                    _ => content::edit_text(&mut rng, &file.data),
                };
                self.put(&path, kind, data, executable);
                summary.edited += 1;
            }
        }
        for _ in 0..rng.range(0, 4) {
            let dir = rng.pick(&focus).clone();
            let path = format!("{dir}/docs/{}.md", content::ident(&mut rng).replace('_', "-"));
            let size = rng.size(3_000, 500, 20_000);
            let title = content::sentence(&mut rng);
            self.put(&path, Kind::Text, content::markdown(&mut rng, &title, size), false);
            summary.added += 1;
        }
        for _ in 0..rng.range(0, 2) {
            if let Some(path) = self.random_path(&mut rng, None, |f| f.kind == Kind::Text) {
                self.remove(&path);
                summary.removed += 1;
            }
        }
        for _ in 0..rng.range(0, 2) {
            let prefix = rng.pick(&focus).clone();
            if let Some(path) = self.random_path(&mut rng, Some(&prefix), |f| f.kind == Kind::Text) {
                if let Some(mut file) = self.remove(&path) {
                    let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                    let new = format!("{dir}/{}-{name}", rng.word(&WORDS[10..]));
                    if rng.chance(0.5) {
                        file.data = content::edit_text(&mut rng, &file.data);
                    }
                    self.put(&new, file.kind, file.data, file.executable);
                    summary.renamed += 1;
                }
            }
        }
        if summary.what.is_empty() {
            summary.what = format!("update {}", focus.join(", "));
        }
        summary
    }

    /// Writes the paths changed since the last call into the work tree `dir`.
    pub fn write_changes(&mut self, dir: &Path) -> Result<()> {
        for path in std::mem::take(&mut self.touched) {
            let target = dir.join(&path);
            match self.files.get(&path) {
                Some(file) => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                    }
                    fs::write(&target, &file.data).with_context(|| format!("writing {}", target.display()))?;
                    let mode = if file.executable { 0o755 } else { 0o644 };
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
                }
                None => match fs::remove_file(&target) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", target.display()))
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    fn put(&mut self, path: &str, kind: Kind, data: impl Into<Vec<u8>>, executable: bool) {
        self.files.insert(path.to_owned(), File { kind, data: data.into(), executable });
        self.touched.insert(path.to_owned());
    }

    fn remove(&mut self, path: &str) -> Option<File> {
        self.touched.insert(path.to_owned());
        self.files.remove(path)
    }

    /// A random existing path under `prefix` (anywhere without one) whose file passes `keep`.
    fn random_path(&self, rng: &mut Rng, prefix: Option<&str>, keep: impl Fn(&File) -> bool) -> Option<String> {
        let all: Vec<(&String, &File)> = match prefix {
            Some(p) => {
                let dir = format!("{p}/");
                self.files.range(dir.clone()..).take_while(|(k, _)| k.starts_with(&dir)).collect()
            }
            None => self.files.iter().collect(),
        };
        let candidates: Vec<&String> = all.into_iter().filter(|(_, f)| keep(f)).map(|(k, _)| k).collect();
        (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())].clone())
    }

    /// Adds a service with its manifests, config, code, scripts, docs and assets;
    /// returns its name.
    fn add_service(&mut self, rng: &mut Rng) -> String {
        let team = rng.pick(TEAMS).to_string();
        let name = format!("{}-{}", rng.word(&WORDS[40..]), rng.pick(&WORDS[60..])).replace('_', "-");
        let dir = format!("services/{team}/{name}");
        if self.services.iter().any(|s| s.dir == dir) {
            return name;
        }
        let lang = *rng.pick(&[Lang::Python, Lang::Python, Lang::Go, Lang::Rust]);
        let version = (rng.range(0, 3), rng.range(0, 30), rng.range(0, 20));
        let v = format!("{}.{}.{}", version.0, version.1, version.2);
        self.put(
            &format!("{dir}/deploy/deployment.yaml"),
            Kind::Text,
            manifests::deployment(rng, &name, &team, &v),
            false,
        );
        for (i, file) in ["service.yaml", "configmap.yaml", "hpa.yaml"].iter().enumerate() {
            let text = manifests::small_manifest(rng, &name, &team, i);
            self.put(&format!("{dir}/deploy/{file}"), Kind::Text, text, false);
        }
        let size = rng.size(2_500, 300, 20_000);
        self.put(&format!("{dir}/config/app.toml"), Kind::Text, content::toml(rng, size), false);
        for file in ["logging.json", "features.json"] {
            let size = rng.size(1_500, 200, 12_000);
            self.put(&format!("{dir}/config/{file}"), Kind::Text, content::json(rng, size), false);
        }
        for file in ["run.sh", "healthcheck.sh"] {
            let size = rng.size(1_200, 200, 6_000);
            self.put(&format!("{dir}/bin/{file}"), Kind::Text, content::source(rng, Lang::Shell, size), true);
        }
        let size = rng.size(4_000, 600, 20_000);
        let title = format!("{name}: {}", content::sentence(rng));
        self.put(&format!("{dir}/README.md"), Kind::Text, content::markdown(rng, &title, size), false);
        for _ in 0..rng.range(0, 3) {
            let size = rng.size(5_000, 600, 30_000);
            let title = content::sentence(rng);
            let path = format!("{dir}/docs/{}.md", content::ident(rng).replace('_', "-"));
            self.put(&path, Kind::Text, content::markdown(rng, &title, size), false);
        }
        let modules: Vec<String> = (0..rng.range(2, 4)).map(|_| content::ident(rng)).collect();
        for _ in 0..rng.range(8, 30) {
            let module = rng.pick(&modules).clone();
            let sub = if rng.chance(0.3) { format!("/{}", rng.word(&WORDS[60..])) } else { String::new() };
            let size = rng.size(5_000, 300, 60_000);
            let path = format!("{dir}/src/{module}{sub}/{}.{}", content::ident(rng), lang.ext());
            self.put(&path, Kind::Text, content::source(rng, lang, size), false);
        }
        for _ in 0..rng.range(2, 6) {
            let size = rng.size(3_000, 300, 30_000);
            let path = format!("{dir}/tests/test_{}.{}", content::ident(rng), lang.ext());
            self.put(&path, Kind::Text, content::source(rng, lang, size), false);
        }
        for _ in 0..rng.range(0, 5) {
            let size = rng.size(5_000, 200, 120_000);
            let path = format!("{dir}/assets/{}.png", content::ident(rng).replace('_', "-"));
            self.put(&path, Kind::Blob, content::blob(rng, size), false);
        }
        self.services.push(Service { dir, name: name.clone(), team, version });
        name
    }

    /// Adds a site with its inventory, network config, overrides and calibration.
    fn add_site(&mut self, rng: &mut Rng) {
        let region = format!("{}-{}", rng.pick(&["north", "south", "east", "west", "central"]), rng.range(1, 6));
        let site = format!("{}-{:02}", rng.word(&WORDS[240..]), rng.range(1, 99));
        let dir = format!("sites/{region}/{site}");
        if self.sites.contains(&dir) {
            return;
        }
        let devices = rng.range(4, 60);
        self.put(
            &format!("{dir}/inventory.yaml"),
            Kind::Text,
            manifests::inventory(rng, &site, &region, devices),
            false,
        );
        let size = rng.size(2_000, 300, 15_000);
        self.put(&format!("{dir}/network.json"), Kind::Text, content::json(rng, size), false);
        let size = rng.size(800, 200, 5_000);
        self.put(&format!("{dir}/site.toml"), Kind::Text, content::toml(rng, size), false);
        for _ in 0..rng.range(1, 5) {
            if self.services.is_empty() {
                break;
            }
            let s = rng.pick(&self.services).clone();
            let text = manifests::small_manifest(rng, &s.name, &s.team, 1);
            self.put(&format!("{dir}/overrides/{}.yaml", s.name), Kind::Text, text, false);
        }
        if rng.chance(0.5) {
            let size = rng.size(12_000, 2_000, 80_000);
            self.put(&format!("{dir}/calibration.csv"), Kind::Text, content::csv(rng, size), false);
        }
        self.sites.push(dir);
    }
}

/// A firmware image in the tree.
#[derive(Debug, Clone)]
struct Firmware {
    model: String,
    version: usize,
    /// `<model>-1.0.<n>.bin` rather than `image.bin`.
    versioned_name: bool,
}

impl Firmware {
    fn path(&self) -> String {
        let model = &self.model;
        if self.versioned_name {
            format!("firmware/{model}/{model}-1.0.{}.bin", self.version)
        } else {
            format!("firmware/{model}/image.bin")
        }
    }

    fn release_path(&self) -> String {
        format!("firmware/{}/release.toml", self.model)
    }

    fn release_toml(&self, rng: &mut Rng) -> String {
        format!(
            "model = \"{}\"\nversion = \"1.0.{}\"\nimage = \"{}\"\nsha256 = \"{}\"\nnotes = \"{}\"\n",
            self.model,
            self.version,
            self.path().rsplit('/').next().unwrap_or(""),
            rng.hex(64),
            content::sentence(rng)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(h: &History) -> Vec<(String, usize, u64)> {
        let sum = |d: &[u8]| d.iter().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
        h.files.iter().map(|(p, f)| (p.clone(), f.data.len(), sum(&f.data))).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let run = |seed| {
            let mut h = History::new(seed, 400);
            let mut trees = vec![digest(&h)];
            for n in 2..=10 {
                h.commit(n, 10);
                trees.push(digest(&h));
            }
            trees
        };
        let a = run(5);
        assert_eq!(a[0].len(), 400);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
        // Every commit changes something.
        assert!(a.windows(2).all(|w| w[0] != w[1]));
    }
}
