//! `validator`: the ledger's validator daemon (development form).
//!
//! `validator init --dir D --addrs A1,A2,... [--overlay-addrs U1,U2,...]` writes a development
//! chain into `D`: one key per validator (`validator-I.key`), a funded development account
//! (`dev-account.key`), the governance key, `genesis.bin` and `peers.txt` (index, key,
//! address). With `--overlay-addrs` (one UDP address each) every validator also gets an
//! overlay identity (`validator-I.overlay-key`, a key of its own), serves clients on the
//! overlay and talks consensus with the other validators over it; `validators.txt` lists
//! them as `OVERLAYKEY@UDPADDR`, the form gridctl takes.
//! `validator run --dir D --index I` runs validator I until it is killed; its blocks are in
//! `D/validator-I.redb`.
//! `validator dev-farm --dir D` makes (once) a farm of the development account for
//! development nodes and prints its id and the chain id (`gridos run --validators`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ledger::rpc::{Request, Response};
use ledger::{Genesis, Keypair, StateKey, Transaction, TxKind, Validator};
use validator::daemon::{run, Config};
use validator::service::OverlayConfig;
use validator::Timeouts;

#[derive(Parser)]
#[command(about = "The ledger's validator daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a development chain: keys, genesis, peers.
    Init {
        /// Folder to write into (must not hold a chain yet).
        #[arg(long)]
        dir: PathBuf,
        /// One listen address per validator, comma-separated.
        #[arg(long, value_delimiter = ',')]
        addrs: Vec<SocketAddr>,
        /// One overlay UDP address per validator, comma-separated (optional): validators
        /// then serve clients on the overlay.
        #[arg(long, value_delimiter = ',')]
        overlay_addrs: Vec<SocketAddr>,
        /// Initial balance of the development account.
        #[arg(long, default_value_t = 1_000_000_000)]
        balance: u64,
        /// Length of a billing period in seconds (an hour on a real chain; test chains
        /// use a few seconds so that uptime, proofs and billing run within a test).
        #[arg(long, default_value_t = ledger::PERIOD_MS / 1000)]
        period_secs: u64,
    },
    /// Makes the development account's farm once (kept in dev-farm.txt) and prints
    /// `farm F` and `chain CHAINID`: what development nodes boot with.
    DevFarm {
        /// The chain's folder (from `init`; its validators running).
        #[arg(long)]
        dir: PathBuf,
        /// The farm's name.
        #[arg(long, default_value = "dev")]
        name: String,
    },
    /// Runs validator `index` of the chain in `dir` until killed.
    Run {
        /// The chain's folder.
        #[arg(long)]
        dir: PathBuf,
        /// Which validator.
        #[arg(long)]
        index: usize,
    },
}

/// Creates `path` readable by its owner only and writes `text`; never replaces a file.
fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
    Ok(seed)
}

fn new_key(path: &Path) -> Result<Keypair, String> {
    let seed = random_seed().map_err(|e| e.to_string())?;
    let key = Keypair::try_from_seed(seed).ok_or("zero seed")?;
    write_new_secret(path, &hex(&seed)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// Reads a key file written by `init`.
pub fn read_key(path: &Path) -> Result<Keypair, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let seed = unhex32(&text).ok_or_else(|| format!("{}: not a 64-digit hex seed", path.display()))?;
    Keypair::try_from_seed(seed).ok_or_else(|| format!("{}: refused seed", path.display()))
}

fn init(dir: &Path, addrs: &[SocketAddr], overlay_addrs: &[SocketAddr], balance: u64, period_secs: u64) -> Result<(), String> {
    if addrs.is_empty() {
        return Err("--addrs names no validator".into());
    }
    if !overlay_addrs.is_empty() && overlay_addrs.len() != addrs.len() {
        return Err("--overlay-addrs must name one address per validator".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let keys: Vec<Keypair> = (0..addrs.len()).map(|i| new_key(&dir.join(format!("validator-{i}.key")))).collect::<Result<_, _>>()?;
    let dev = new_key(&dir.join("dev-account.key"))?;
    let governance = new_key(&dir.join("governance.key"))?;
    let time_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis() as u64;
    let genesis = Genesis {
        chain_name: "gridos-dev".into(),
        time_ms,
        validators: keys.iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
        balances: vec![(dev.public(), balance)],
        governance: governance.public(),
        period_ms: period_secs.saturating_mul(1000),
    };
    genesis.check().map_err(|e| format!("genesis: {e}"))?;
    let bytes = postcard::to_allocvec(&genesis).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("genesis.bin"), bytes).map_err(|e| e.to_string())?;
    let peers: String = keys.iter().zip(addrs).enumerate().map(|(i, (k, a))| format!("{i} {} {a}\n", hex(&k.public()))).collect();
    std::fs::write(dir.join("peers.txt"), peers).map_err(|e| e.to_string())?;
    let mut targets = String::new();
    for (i, addr) in overlay_addrs.iter().enumerate() {
        let overlay = new_key(&dir.join(format!("validator-{i}.overlay-key")))?;
        targets.push_str(&format!("{}@{addr}\n", hex(&overlay.public())));
    }
    if !overlay_addrs.is_empty() {
        std::fs::write(dir.join("validators.txt"), &targets).map_err(|e| e.to_string())?;
        print!("validators on the overlay (validators.txt):\n{targets}");
    }
    println!("chain {} with {} validator(s) in {}", hex(&genesis.chain_id()[..8]), addrs.len(), dir.display());
    println!("development account {} holds {balance}", hex(&dev.public()));
    Ok(())
}

fn load(dir: &Path, index: usize) -> Result<Config, String> {
    let bytes = std::fs::read(dir.join("genesis.bin")).map_err(|e| format!("genesis.bin: {e}"))?;
    let genesis: Genesis = postcard::from_bytes(&bytes).map_err(|_| "genesis.bin does not decode".to_string())?;
    let peers_text = std::fs::read_to_string(dir.join("peers.txt")).map_err(|e| format!("peers.txt: {e}"))?;
    let mut peers = Vec::new();
    let mut listen = None;
    let mut validator_keys = Vec::new();
    for line in peers_text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [i, key, addr] = fields.as_slice() else { return Err(format!("peers.txt: bad line {line:?}")) };
        let i: usize = i.parse().map_err(|_| format!("peers.txt: bad index in {line:?}"))?;
        let key = unhex32(key).ok_or_else(|| format!("peers.txt: bad key in {line:?}"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("peers.txt: bad address in {line:?}"))?;
        if i != validator_keys.len() {
            return Err(format!("peers.txt: validators out of order at {line:?}"));
        }
        validator_keys.push(key);
        if i == index {
            listen = Some(addr);
        } else {
            peers.push((key, addr));
        }
    }
    let listen = listen.ok_or_else(|| format!("peers.txt has no validator {index}"))?;
    let overlay = load_overlay(dir, index, &validator_keys)?;
    Ok(Config {
        key: read_key(&dir.join(format!("validator-{index}.key")))?,
        genesis,
        listen,
        peers,
        store: dir.join(format!("validator-{index}.redb")),
        timeouts: Timeouts::default(),
        overlay,
    })
}

/// The overlay side of validator `index`, if the chain has one (`validators.txt`): its
/// identity from `validator-I.overlay-key`, its UDP address, and the other validators as
/// overlay peers.
fn load_overlay(dir: &Path, index: usize, validator_keys: &[[u8; 32]]) -> Result<Option<OverlayConfig>, String> {
    let text = match std::fs::read_to_string(dir.join("validators.txt")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("validators.txt: {e}")),
    };
    let mut targets = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, addr) = line.trim().split_once('@').ok_or_else(|| format!("validators.txt: bad line {line:?}"))?;
        let key = unhex32(key).ok_or_else(|| format!("validators.txt: bad key in {line:?}"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("validators.txt: bad address in {line:?}"))?;
        targets.push((key, addr));
    }
    let Some(&(_, listen)) = targets.get(index) else { return Err(format!("validators.txt has no validator {index}")) };
    if targets.len() != validator_keys.len() {
        return Err("validators.txt and peers.txt name different numbers of validators".into());
    }
    let path = dir.join(format!("validator-{index}.overlay-key"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let identity_seed = unhex32(&text).ok_or_else(|| format!("{}: not a 64-digit hex seed", path.display()))?;
    let peers = targets.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, t)| *t).collect();
    // Validator I of peers.txt is line I of validators.txt: consensus goes over the overlay.
    let consensus = validator_keys.iter().zip(&targets).enumerate().filter(|(i, _)| *i != index).map(|(_, (v, t))| (*v, t.0)).collect();
    Ok(Some(OverlayConfig { listen, identity_seed, peers, consensus }))
}

/// A light client following the chain through validator `addr`'s plain TCP listener.
struct Follow {
    addr: SocketAddr,
    light: ledger::LightClient,
}

const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Follow {
    fn call(&self, request: &Request) -> Result<Response, String> {
        match validator::daemon::call(self.addr, request, CALL_TIMEOUT) {
            Ok(Response::Refused(why)) => Err(format!("refused: {why}")),
            Ok(response) => Ok(response),
            Err(e) => Err(format!("{}: {e}", self.addr)),
        }
    }

    /// Follows to the validator's height; every block checked by the light client.
    fn follow(&mut self) -> Result<(), String> {
        let Response::Status { height, .. } = self.call(&Request::Status)? else { return Err("unexpected answer to Status".into()) };
        while self.light.latest().height < height {
            let from = self.light.latest().height + 1;
            let Response::LightBlocks(blocks) = self.call(&Request::LightBlocks { from, count: ledger::rpc::LIGHT_BLOCKS_PER_RESPONSE_MAX })? else {
                return Err("unexpected answer to LightBlocks".into());
            };
            if blocks.is_empty() {
                return Err(format!("no block {from}"));
            }
            for block in &blocks {
                self.light.accept(block).map_err(|e| format!("block {} refused: {e:?}", block.header.height))?;
            }
        }
        Ok(())
    }

    /// A record proven against a header the light client accepted.
    fn prove(&mut self, key: StateKey) -> Result<(u64, ledger::StateProof), String> {
        let Response::Proof { height, proof } = self.call(&Request::Prove(key))? else { return Err("unexpected answer to Prove".into()) };
        if height > self.light.latest().height {
            self.follow()?;
        }
        Ok((height, proof))
    }
}

/// `dev-farm`: the development account's farm for nodes booted by `gridos run
/// --validators`: made once (`CreateFarm` from `dev-account.key`, waiting until decided),
/// its id kept in `dev-farm.txt`. Prints `farm F` and `chain CHAINID`. Every read is
/// checked by a light client from the genesis.
fn dev_farm(dir: &Path, name: &str) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("genesis.bin")).map_err(|e| format!("genesis.bin: {e}"))?;
    let genesis: Genesis = postcard::from_bytes(&bytes).map_err(|_| "genesis.bin does not decode".to_string())?;
    let chain_id = genesis.chain_id();
    let kept = dir.join("dev-farm.txt");
    if let Some(id) = std::fs::read_to_string(&kept).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
        println!("farm {id}\nchain {}", hex(&chain_id));
        return Ok(());
    }
    let dev = read_key(&dir.join("dev-account.key"))?;
    let peers_text = std::fs::read_to_string(dir.join("peers.txt")).map_err(|e| format!("peers.txt: {e}"))?;
    let addrs: Vec<SocketAddr> = peers_text.lines().filter_map(|l| l.split_whitespace().nth(2)).filter_map(|a| a.parse().ok()).collect();
    let light = ledger::LightClient::from_genesis(&genesis).map_err(|e| format!("genesis: {e:?}"))?;
    // The validators may be starting: try each for up to a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut follow = loop {
        if let Some(addr) = addrs.iter().copied().find(|a| validator::daemon::call(*a, &Request::Status, CALL_TIMEOUT).is_ok()) {
            break Follow { addr, light };
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no validator of {} answers", dir.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    follow.follow()?;
    let (height, proof) = follow.prove(StateKey::Account(dev.public()))?;
    let account = follow.light.account(height, &dev.public(), &proof).map_err(|e| format!("account proof: {e:?}"))?;
    let tx = Transaction { account: dev.public(), nonce: account.nonce, kind: TxKind::CreateFarm { name: name.into() } }.sign(&chain_id, &dev);
    let Response::Committed(at) = follow.call(&Request::Submit(tx))? else { return Err("unexpected answer to Submit".into()) };
    follow.follow()?;
    let (height, proof) = follow.prove(StateKey::Meta)?;
    let meta = follow.light.meta(height, &proof).map_err(|e| format!("meta proof: {e:?}"))?;
    for id in (meta.next_farm_id.saturating_sub(64)..meta.next_farm_id).rev() {
        let (height, proof) = follow.prove(StateKey::Farm(id))?;
        let farm = follow.light.farm(height, id, &proof).map_err(|e| format!("farm proof: {e:?}"))?;
        if farm.is_some_and(|f| f.owner == dev.public() && f.name == name) {
            std::fs::write(&kept, format!("{id}\n")).map_err(|e| format!("{}: {e}", kept.display()))?;
            println!("farm {id}\nchain {}", hex(&chain_id));
            return Ok(());
        }
    }
    Err(format!("the farm is not in the proven state after block {at}"))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Init { dir, addrs, overlay_addrs, balance, period_secs } => init(&dir, &addrs, &overlay_addrs, balance, period_secs),
        Command::DevFarm { dir, name } => dev_farm(&dir, &name),
        Command::Run { dir, index } => load(&dir, index).and_then(|config| {
            eprintln!("validator {index} listening on {}", config.listen);
            run(config, Arc::new(AtomicBool::new(false))).map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("validator: {error}");
            ExitCode::FAILURE
        }
    }
}
