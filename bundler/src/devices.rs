//! `bundler devices enroll|list`: which devices may report, and with which key.
//!
//! A device makes its own Ed25519 key on first start and prints the public half
//! (`ferry-agent identity`); the operator enrolls that public key under the device's id.
//! The key file may hold other text around the PEM block (what `identity` prints), or be
//! `-` for standard input. A file holding a private key is refused: the operator never
//! needs, and should never hold, a device's private key.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ferry_proto::PublicKey;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::device_id::DeviceId;
use crate::fleet::{ago, Table};
use crate::fleetdb::{short_key_id, EnrolledBy, Enrollment, FleetDb};

/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// `bundler devices`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Allow a device to report: record its id and public key.
    Enroll(EnrollArgs),
    /// List enrolled devices and their keys.
    List(ListArgs),
}

/// `bundler devices enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The device's id (its `device_id`, by default its /etc/machine-id).
    id: DeviceId,
    /// File with the device's public key in PEM, as `ferry-agent identity` prints it
    /// (`-` reads standard input).
    pubkey: PathBuf,
    /// Fleet database (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Replace the key of an already enrolled device (a re-provisioned device); its
    /// sequence numbers start again.
    #[arg(long)]
    replace: bool,
}

/// `bundler devices list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Fleet database.
    #[arg(long)]
    db: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `bundler devices …`.
pub fn run(command: &DevicesCommand) -> Result<()> {
    match command {
        DevicesCommand::Enroll(args) => enroll(args),
        DevicesCommand::List(args) => list(args),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn enroll(args: &EnrollArgs) -> Result<()> {
    let file = read_public_key(&args.pubkey)?;
    if let Some(named) = file.device.as_deref().filter(|d| *d != args.id.as_str()) {
        bail!(
            "{} is the identity of device {:?}, not {}; enroll it under its own id",
            args.pubkey.display(),
            crate::fleet::printable(named),
            args.id
        );
    }
    let key = file.key;
    let mut db = FleetDb::open(&args.db)?;
    let id = key.id().to_hex();
    match db.enroll(&args.id, &key, EnrolledBy::Operator, args.replace, now())? {
        Enrollment::New => println!("enrolled device {} with key id {id}", args.id),
        Enrollment::Unchanged => println!("device {} is already enrolled with key id {id}", args.id),
        Enrollment::Replaced { old } => {
            println!("re-enrolled device {}: key id {old} -> {id}; its sequence numbers start again", args.id)
        }
        Enrollment::Conflict { enrolled } => bail!(
            "device {} is enrolled with another key (id {}); pass --replace to enroll key id {} \
             (for a re-provisioned device)",
            args.id,
            short_key_id(&enrolled),
            short_key_id(&id)
        ),
    }
    Ok(())
}

fn list(args: &ListArgs) -> Result<()> {
    let db = FleetDb::open_existing(&args.db)?;
    let devices = db.devices()?;
    if args.json {
        let rows: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device_id": d.device_id,
                    "key_id": d.key_id,
                    "enrolled_at": d.enrolled_at,
                    "enrolled_by": d.enrolled_by,
                    "last_seen": d.last_seen,
                    "acked": d.acked,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if devices.is_empty() {
        println!("no devices enrolled");
        return Ok(());
    }
    let now = now();
    let mut table = Table::new(&["DEVICE", "KEY-ID", "ENROLLED", "BY", "LAST-SEEN", "ACKED"]);
    for d in &devices {
        table.row(vec![
            d.device_id.clone(),
            short_key_id(&d.key_id).to_string(),
            ago(d.enrolled_at, now),
            d.enrolled_by.clone(),
            d.last_seen.map_or("never".into(), |t| ago(t, now)),
            d.acked.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

/// What a key file holds: the key, and the device it names (if it is `identity` output).
#[derive(Debug)]
struct KeyFile {
    key: PublicKey,
    device: Option<String>,
}

/// Reads a public key from a file (or stdin for `-`).
fn read_public_key(path: &Path) -> Result<KeyFile> {
    let shown = if path == Path::new("-") { "standard input".to_string() } else { path.display().to_string() };
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().take(MAX_KEY_FILE).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
    };
    read.with_context(|| format!("reading public key {shown}"))?;
    parse_key_file(&text).with_context(|| format!("loading public key {shown}"))
}

/// A PEM block alone or among other text (`ferry-agent identity`), or that command's
/// `--json` output.
fn parse_key_file(text: &str) -> Result<KeyFile> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    if text.contains("PRIVATE KEY-----") {
        bail!("this is a private key; enroll the device's public key (`ferry-agent identity` prints it)");
    }
    if let Ok(serde_json::Value::Object(v)) = serde_json::from_str(text) {
        let pem = v.get("public_key").and_then(|k| k.as_str()).context("the JSON has no public_key field")?;
        let device = v.get("device_id").and_then(|d| d.as_str()).map(str::to_owned);
        return Ok(KeyFile { key: PublicKey::from_pem(pem)?, device });
    }
    let start = text.find(BEGIN).context("no `-----BEGIN PUBLIC KEY-----` block")?;
    let len = text[start..].find(END).context("the PEM block has no END line")? + END.len();
    let device = text.lines().find_map(|l| l.strip_prefix("device ")).map(|d| d.trim().to_owned());
    Ok(KeyFile { key: PublicKey::from_pem(&text[start..start + len])?, device })
}

#[cfg(test)]
mod tests {
    use super::parse_key_file;
    use ferry_proto::SigningKey;

    #[test]
    fn pem_is_found_in_identity_output_and_private_keys_are_refused() {
        let key = SigningKey::generate().expect("rng");
        let pem = key.public().to_pem();
        let printed = format!("device       pump-17\nkey id       {}\nkey file     /x\n{pem}", key.public().id());
        let parsed = parse_key_file(&printed).expect("identity text");
        assert_eq!((parsed.key, parsed.device.as_deref()), (key.public(), Some("pump-17")));
        let json = serde_json::json!({ "device_id": "pump-17", "key_id": "…", "public_key": pem }).to_string();
        let parsed = parse_key_file(&json).expect("identity json");
        assert_eq!((parsed.key, parsed.device.as_deref()), (key.public(), Some("pump-17")));
        let parsed = parse_key_file(&pem).expect("bare pem");
        assert_eq!((parsed.key, parsed.device), (key.public(), None));
        let private = key.to_pem().expect("pem");
        assert!(parse_key_file(&private).expect_err("private").to_string().contains("private key"));
        assert!(parse_key_file("nothing here").is_err());
    }
}
