//! The commands and what they print. Output goes to `out`, so tests can read it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use control::{ErrorCode, Request, Response, WorkloadSummary};

use crate::client::{Client, Options};
use crate::deploy::{self, Spec};
use crate::key::{key_path, UserKey};
use crate::target::Target;
use crate::{address_string, bail, hex, Context, Error, Result};

/// gridctl: keys, workloads and files on gridos nodes, over the encrypted overlay.
#[derive(Parser, Debug)]
#[command(name = "gridctl", version)]
pub struct Cli {
    /// Key file (default: $GRIDCTL_KEY, else ~/.config/gridos/key).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Seconds to wait for the link, the connection, or any progress of a request.
    #[arg(long, global = true, default_value_t = 20, value_name = "SECS")]
    pub timeout: u64,
    /// Join the overlay as your key (for nodes that list it in gridos.overlay.peers)
    /// instead of a fresh one-off identity (needs gridos.overlay.accept_any=1 on the node).
    #[arg(long, global = true)]
    pub user_overlay_key: bool,
    /// The ledger folder (default: $GRIDCTL_LEDGER_DIR, else ~/.config/gridos/ledger). When
    /// it holds a trusted chain (`gridctl ledger trust`), `deploy` and `store` create and pay
    /// their contracts on the ledger first.
    #[arg(long, global = true, value_name = "DIR")]
    pub ledger_dir: Option<PathBuf>,
    /// Use no ledger even if one is trusted (nodes in development mode).
    #[arg(long, global = true)]
    pub no_ledger: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The node to talk to.
#[derive(Args, Debug, Clone)]
pub struct NodeArg {
    /// The node: KEY@HOST:PORT (KEY: its overlay key, printed at boot as `overlay: key ...`;
    /// PORT: its overlay UDP port, 7443 by default).
    #[arg(long, env = "GRIDCTL_NODE", value_name = "KEY@HOST:PORT")]
    pub node: String,
}

/// Subcommands.
// Parsed once per run: the size of the deploy variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make or show your key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Deploy a wasm module or an OCI image layout tar; prints the workload id.
    Deploy(DeployArgs),
    /// Your workloads on the node.
    List(NodeArg),
    /// One workload.
    Status {
        #[command(flatten)]
        node: NodeArg,
        /// Workload id.
        id: u64,
    },
    /// A workload's output.
    Logs {
        #[command(flatten)]
        node: NodeArg,
        /// Workload id.
        id: u64,
        /// Keep printing new lines until the workload ends.
        #[arg(long, short)]
        follow: bool,
        /// The output byte for byte as the program wrote it (stdout; with --stderr,
        /// stderr), not cleaned into lines: `gridctl logs ID --raw > out`.
        #[arg(long)]
        raw: bool,
        /// With --raw: stderr instead of stdout.
        #[arg(long, requires = "raw")]
        stderr: bool,
    },
    /// A workload's file area (`/data`): ls, get, put, rm.
    Files {
        #[command(flatten)]
        node: NodeArg,
        /// Workload id.
        id: u64,
        #[command(subcommand)]
        command: crate::files::FilesCommand,
    },
    /// Stop a workload.
    Stop {
        #[command(flatten)]
        node: NodeArg,
        /// Workload id.
        id: u64,
    },
    /// Stop and remove a workload.
    Rm {
        #[command(flatten)]
        node: NodeArg,
        /// Workload id.
        id: u64,
    },
    /// The node's key, address and resources.
    Info(NodeArg),
    /// Files over many nodes: put, get, verify, repair, ls, rm.
    #[command(subcommand)]
    Store(crate::store::StoreCommand),
    /// A node's operations view: metrics, status, kernel log.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The grid's ledger through its validators on the overlay; every read is verified
    /// by the light client against the chain trusted with `gridctl ledger trust`.
    Ledger {
        #[command(subcommand)]
        command: crate::ledger::LedgerCommand,
    },
    /// The nodes registered on the ledger, each record verified: farm, capacity, what
    /// contracts reserve and what is free, last uptime period, storage proofs.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forward a local TCP port (on 127.0.0.1) to a port on a node's overlay address,
    /// through gridctl's overlay stack (no root needed). Runs until interrupted.
    Forward {
        /// The local port to listen on.
        local_port: u16,
        /// NODE:PORT, NODE being KEY@HOST:UDPPORT (e.g. KEY@10.0.0.5:7443:8080).
        destination: String,
    },
    /// Join the overlay from this host (root): a TUN interface with your overlay address,
    /// fd67::/16 routed through it, so ping, curl, ssh, nc and Prometheus reach overlay
    /// addresses.
    #[command(subcommand)]
    Overlay(OverlayCommand),
}

/// `gridctl overlay ...`
#[derive(Subcommand, Debug)]
pub enum OverlayCommand {
    /// Create the interface and link to the nodes named (in the background unless
    /// --foreground); prints the address and the peers it links through.
    Up {
        /// Nodes to link through: KEY@HOST:PORT (default: $GRIDCTL_NODES, comma-separated).
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
        /// The interface's name.
        #[arg(long, default_value = crate::tunnel::DEFAULT_NAME)]
        name: String,
        /// Where the daemon's pid and log files go.
        #[arg(long, default_value = crate::tunnel::DEFAULT_RUN_DIR, value_name = "DIR")]
        run_dir: PathBuf,
        /// Local UDP port of the overlay (0: any).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Run the daemon in this process (until killed) instead of in the background.
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the daemon; the interface and its route go with it.
    Down {
        /// The interface's name.
        #[arg(long, default_value = crate::tunnel::DEFAULT_NAME)]
        name: String,
        /// Where the daemon's pid file is.
        #[arg(long, default_value = crate::tunnel::DEFAULT_RUN_DIR, value_name = "DIR")]
        run_dir: PathBuf,
    },
}

/// `gridctl node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Print the node's Prometheus metrics (HTTP GET /metrics on its overlay address,
    /// TCP 9100, through gridctl's overlay stack).
    Metrics {
        /// The node: KEY@HOST:PORT.
        #[arg(env = "GRIDCTL_NODE", value_name = "NODE")]
        node: String,
    },
    /// The node's identity, address, farm, version, uptime, peers and workloads (yours;
    /// all of them, with disks and NICs, for the farmer's key named in the image).
    Status {
        /// The node: KEY@HOST:PORT.
        #[arg(env = "GRIDCTL_NODE", value_name = "NODE")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent kernel log lines (the farmer's key only).
    Logs {
        /// The node: KEY@HOST:PORT.
        #[arg(env = "GRIDCTL_NODE", value_name = "NODE")]
        node: String,
        /// Keep printing new lines (until interrupted).
        #[arg(long, short)]
        follow: bool,
    },
}

/// `gridctl key ...`
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make a new key file (never overwrites one).
    New,
    /// Print your public key and overlay address.
    Show,
}

/// `gridctl deploy ...`
#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Workload name (default: the file name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// An argument for the program (repeat for more; argv[0] is the name).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable, KEY=VALUE (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// CPU time limit in milliseconds.
    #[arg(long)]
    pub cpu_ms: Option<u64>,
    /// Wall-clock limit in milliseconds.
    #[arg(long)]
    pub wall_ms: Option<u64>,
    /// Log limit in KiB.
    #[arg(long)]
    pub log_kb: Option<u64>,
    /// Size of the workload's persistent file area (`/data`) in KiB; 0 for none.
    #[arg(long)]
    pub storage_kb: Option<u64>,
    /// An overlay TCP port the workload serves on (repeat for more; up to 4).
    #[arg(long = "listen", value_name = "PORT")]
    pub listen: Vec<u16>,
    /// Start the workload again after the node reboots.
    #[arg(long)]
    pub restart: bool,
    /// Where the program sees its file area instead of `/data` (an absolute path, as
    /// wasmtime's `--dir HOST::GUEST`); `.` is the area either way.
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<String>,
    /// Get native code for the module from this compile service (`gridos-compiler`; KEY is
    /// its public key) and attach its attested bundle. The node runs that code only if it
    /// trusts KEY (gridos.compilers). Without --compiler or --bundle the node runs the
    /// module in its interpreter.
    #[arg(long, env = "GRIDOS_COMPILER", value_name = "KEY@HOST:PORT", conflicts_with = "bundle")]
    pub compiler: Option<String>,
    /// Attach this attested bundle (from a compile service earlier); the node verifies it
    /// and refuses the deploy if it does not check out.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Put a local file into the workload's area (`/data`) before it starts, as NAME
    /// (default: the file's name); repeat for more. Needs a file area (--storage-kb).
    #[arg(long = "file", value_name = "PATH[:NAME]")]
    pub files: Vec<String>,
    /// Put every file under a local directory into the area before it starts (at the
    /// area's root, or under NAME), keeping the tree.
    #[arg(long = "dir", value_name = "DIR[:NAME]")]
    pub dirs: Vec<String>,
    /// The program's standard input: this file, put in the area as `.stdin` and read
    /// by the run from the start.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// With a ledger: run under this workload contract (yours, active, for this node)
    /// instead of creating one.
    #[arg(long, value_name = "ID")]
    pub contract: Option<u64>,
    /// With a ledger: the new contract's price per period (default
    /// gridctl::onledger::WORKLOAD_PRICE_DEFAULT, 10).
    #[arg(long, conflicts_with = "contract")]
    pub price: Option<u64>,
    /// The program: a .wasm module, an OCI image layout tar, or an image in a registry,
    /// REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:DIGEST (pulled here, every digest
    /// checked; the signed manifest names the image's digest).
    pub file: PathBuf,
}

impl DeployArgs {
    fn spec(&self) -> Spec {
        Spec {
            name: self.name.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            memory_mb: self.memory_mb,
            cpu_ms: self.cpu_ms,
            wall_ms: self.wall_ms,
            log_kb: self.log_kb,
            storage_kb: self.storage_kb,
            listen: self.listen.clone(),
            restart: self.restart,
            data_dir: self.data_dir.clone(),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let path = key_path(cli.key.as_deref())?;
    let options = Options { timeout: Duration::from_secs(cli.timeout.max(1)), user_overlay_identity: cli.user_overlay_key };
    let w = |r: std::io::Result<()>| r.context(|| "cannot write output".into());
    match cli.command {
        Command::Key(KeyCommand::New) => {
            let key = UserKey::generate()?;
            key.save_new(&path)?;
            w(writeln!(out, "new key in {}", path.display()))?;
            show_key(&key, out)
        }
        Command::Key(KeyCommand::Show) => show_key(&UserKey::load(&path)?, out),
        Command::Deploy(args) => {
            let user = UserKey::load(&path)?;
            let ledger = crate::onledger::ledger_in_use(cli.ledger_dir.as_deref(), cli.no_ledger)?;
            let deployed = match ledger {
                Some(dir) => {
                    let mut ledger = crate::ledger::connect(&dir, options.timeout)?;
                    let deployed = deploy_on(&args, &user, options, Some(&mut ledger));
                    ledger.transport.close();
                    deployed?
                }
                None => deploy_on::<crate::ledger::OverlayTransport>(&args, &user, options, None)?,
            };
            if let Some(c) = &deployed.contract {
                match c.created_in {
                    Some(height) => eprintln!("gridctl: workload contract {} created in block {height} ({} per period)", c.id, c.price),
                    None => eprintln!("gridctl: under workload contract {}", c.id),
                }
            }
            w(writeln!(out, "{}", deployed.id))
        }
        Command::List(node) => {
            let workloads = match call(&node, &path, options, &Request::List)? {
                Response::Workloads(w) => w,
                other => return Err(unexpected(other)),
            };
            w(print_list(&workloads, out))
        }
        Command::Status { node, id } => match call(&node, &path, options, &Request::Status { id })? {
            Response::Status(s) => w(print_status(&s, out)),
            other => Err(unexpected(other)),
        },
        Command::Logs { node, id, follow, raw: false, .. } => logs(&node, &path, options, id, follow, out),
        Command::Logs { node, id, follow, raw: true, stderr } => {
            let stream = if stderr { control::OutputStream::Stderr } else { control::OutputStream::Stdout };
            let mut client = Client::connect(&Target::parse(&node.node)?, &UserKey::load(&path)?, options)?;
            crate::files::raw_logs(&mut client, id, stream, follow, out)?;
            client.close();
            Ok(())
        }
        Command::Files { node, id, command } => {
            let mut client = Client::connect(&Target::parse(&node.node)?, &UserKey::load(&path)?, options)?;
            crate::files::run(&mut client, id, command, out)?;
            client.close();
            Ok(())
        }
        Command::Stop { node, id } => match call(&node, &path, options, &Request::Stop { id })? {
            Response::Stopped => w(writeln!(out, "stopped {id}")),
            other => Err(unexpected(other)),
        },
        Command::Rm { node, id } => match call(&node, &path, options, &Request::Remove { id })? {
            Response::Removed => w(writeln!(out, "removed {id}")),
            other => Err(unexpected(other)),
        },
        Command::Store(command) => {
            let ledger = crate::onledger::ledger_in_use(cli.ledger_dir.as_deref(), cli.no_ledger)?;
            let factory = ledger.map(|dir| crate::store::contracts::network(dir, options.timeout));
            crate::store::run(command, &path, &crate::store::network(options), factory.as_ref().map(|f| f as _), out)
        }
        Command::Node(command) => node_command(command, &path, options, out),
        Command::Ledger { command } => {
            crate::ledger::run(command, &crate::ledger::ledger_dir(cli.ledger_dir.as_deref())?, &path, options.timeout, out)
        }
        Command::Nodes { json } => {
            let Some(dir) = crate::onledger::ledger_in_use(cli.ledger_dir.as_deref(), cli.no_ledger)? else {
                bail!("no ledger trusted: `gridctl nodes` lists the nodes registered on a ledger (run `gridctl ledger trust` first)");
            };
            let mut ledger = crate::ledger::connect(&dir, options.timeout)?;
            let result = crate::onledger::nodes(&mut ledger, json, out);
            ledger.transport.close();
            result
        }
        Command::Forward { local_port, destination } => {
            let (target, port) = crate::forward::parse_destination(&destination)?;
            let listener = std::net::TcpListener::bind(("127.0.0.1", local_port))
                .context(|| format!("cannot listen on 127.0.0.1:{local_port}"))?;
            let stop = std::sync::atomic::AtomicBool::new(false);
            crate::forward::run(listener, &target, port, options.timeout, &stop, out)
        }
        Command::Overlay(command) => overlay_command(command, &path, options, out),
        Command::Info(node) => match call(&node, &path, options, &Request::NodeInfo)? {
            Response::NodeInfo { key, address, uptime_ms, workloads, storage_free_bytes } => w((|| {
                writeln!(out, "key              {}", hex(&key))?;
                writeln!(out, "address          {}", address_string(&address))?;
                writeln!(out, "uptime           {}", human_duration(uptime_ms))?;
                writeln!(out, "workloads        {workloads}")?;
                writeln!(out, "storage free     {}", human_bytes(storage_free_bytes))
            })()),
            other => Err(unexpected(other)),
        },
    }
}

fn overlay_command(command: OverlayCommand, key: &std::path::Path, options: Options, out: &mut dyn Write) -> Result<()> {
    match command {
        OverlayCommand::Up { nodes, name, run_dir, port, foreground } => {
            let place = crate::tunnel::Place { name, run_dir };
            let nodes = if nodes.is_empty() {
                std::env::var("GRIDCTL_NODES").unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect()
            } else {
                nodes
            };
            let targets = nodes.iter().map(|n| Target::parse(n)).collect::<Result<Vec<_>>>()?;
            let user = UserKey::load(key)?;
            if foreground {
                crate::tunnel::run_foreground(&place, &user, &targets, port, out)
            } else {
                if targets.is_empty() {
                    return Err(Error("name at least one node to link through (KEY@HOST:PORT, or GRIDCTL_NODES)".into()));
                }
                let key = std::path::absolute(key).unwrap_or_else(|_| key.to_path_buf());
                let args = crate::tunnel::daemon_args(&key, options.timeout.as_secs(), &place, &nodes, port);
                crate::tunnel::up_detached(&place, &args, options.timeout, out)
            }
        }
        OverlayCommand::Down { name, run_dir } => crate::tunnel::down(&crate::tunnel::Place { name, run_dir }, out),
    }
}

fn node_command(command: NodeCommand, key: &std::path::Path, options: Options, out: &mut dyn Write) -> Result<()> {
    match command {
        NodeCommand::Status { node, json } => {
            let node = NodeArg { node };
            match call(&node, key, options, &Request::NodeStatus)? {
                Response::NodeStatus(status) if json => {
                    let text = serde_json::to_string_pretty(&status_json(&status)).context(|| "cannot encode JSON".into())?;
                    writeln!(out, "{text}").context(|| "cannot write output".into())
                }
                Response::NodeStatus(status) => print_node_status(&status, out).context(|| "cannot write output".into()),
                other => Err(unexpected(other)),
            }
        }
        NodeCommand::Logs { node, follow } => node_logs(&NodeArg { node }, key, options, follow, out),
        NodeCommand::Metrics { node } => {
            let target = Target::parse(&node)?;
            let (status, body) = crate::tcp::http_get(&target, metrics::PORT, metrics::http::METRICS_PATH, options.timeout)?;
            if status != 200 {
                return Err(Error(format!("the node answered HTTP {status}: {}", String::from_utf8_lossy(&body).trim())));
            }
            out.write_all(&body).context(|| "cannot write output".into())
        }
    }
}

fn node_logs(node: &NodeArg, key: &std::path::Path, options: Options, follow: bool, out: &mut dyn Write) -> Result<()> {
    let target = Target::parse(&node.node)?;
    let user = UserKey::load(key)?;
    let mut client = Client::connect(&target, &user, options)?;
    let mut from_line = 0;
    loop {
        let (lines, first_line, next_line) = match client.call(&Request::NodeLogs { from_line })? {
            Response::NodeLogs { lines, first_line, next_line } => (lines, first_line, next_line),
            other => return Err(unexpected(other)),
        };
        if first_line > from_line && from_line > 0 {
            writeln!(out, "[gridctl: lines {from_line}..{first_line} are no longer kept by the node]").context(|| "cannot write output".into())?;
        }
        for line in &lines {
            writeln!(out, "{line}").context(|| "cannot write output".into())?;
        }
        out.flush().context(|| "cannot write output".into())?;
        if lines.is_empty() {
            if !follow {
                break;
            }
            client.idle(Duration::from_secs(1))?;
        }
        from_line = next_line.max(from_line);
    }
    client.close();
    Ok(())
}

fn print_node_status(s: &control::NodeStatus, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "key              {}", hex(&s.key))?;
    writeln!(out, "address          {}", address_string(&s.address))?;
    writeln!(out, "version          {}", s.version)?;
    writeln!(out, "uptime           {}", human_duration(s.uptime_ms))?;
    writeln!(out, "role             {}", s.role)?;
    writeln!(out, "farm             {}", s.farm.map_or("none".to_string(), |f| f.to_string()))?;
    writeln!(out, "view             {}", if s.farmer_view { "farmer" } else { "public (your workloads only)" })?;
    if s.farmer_view {
        writeln!(out, "heap             {} used of {}", human_bytes(s.heap_used_bytes), human_bytes(s.heap_size_bytes))?;
        for d in &s.disks {
            writeln!(out, "disk {:<11} {} {} free of {}, {} shards", d.name, d.state, human_bytes(d.free_bytes), human_bytes(d.capacity_bytes), d.shards)?;
        }
        for n in &s.nics {
            let mac: Vec<String> = n.mac.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(out, "nic {:<12} {} rx {} tx {} frames", n.name, mac.join(":"), n.rx_frames, n.tx_frames)?;
        }
    }
    for p in &s.peers {
        let key = p.key.map_or_else(|| "-".to_string(), |k| hex(&k));
        writeln!(out, "peer             {} {} {}", address_string(&p.address), if p.direct { "direct" } else { "routed" }, key)?;
    }
    writeln!(out, "workloads        {}", s.workloads.len())?;
    if !s.workloads.is_empty() {
        print_list(&s.workloads, out)?;
    }
    Ok(())
}

fn status_json(s: &control::NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "key": hex(&s.key),
        "address": address_string(&s.address),
        "version": s.version,
        "uptime_ms": s.uptime_ms,
        "role": s.role,
        "farm": s.farm,
        "farmer_view": s.farmer_view,
        "heap_used_bytes": s.heap_used_bytes,
        "heap_size_bytes": s.heap_size_bytes,
        "disks": s.disks.iter().map(|d| serde_json::json!({
            "name": d.name, "state": d.state, "capacity_bytes": d.capacity_bytes, "free_bytes": d.free_bytes, "shards": d.shards,
        })).collect::<Vec<_>>(),
        "nics": s.nics.iter().map(|n| serde_json::json!({
            "name": n.name, "mac": n.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
            "rx_frames": n.rx_frames, "tx_frames": n.tx_frames,
        })).collect::<Vec<_>>(),
        "peers": s.peers.iter().map(|p| serde_json::json!({
            "address": address_string(&p.address), "key": p.key.map(|k| hex(&k)), "direct": p.direct,
        })).collect::<Vec<_>>(),
        "workloads": s.workloads.iter().map(|w| serde_json::json!({
            "id": w.id, "name": w.name, "owner": hex(&w.owner), "state": w.state.to_string(), "backend": w.backend,
            "cpu_ms": w.cpu_ms, "restart_on_boot": w.restart_on_boot,
        })).collect::<Vec<_>>(),
    })
}

fn show_key(key: &UserKey, out: &mut dyn Write) -> Result<()> {
    (|| {
        writeln!(out, "public key       {}", hex(&key.public_key()))?;
        writeln!(out, "overlay address  {}", address_string(&key.overlay_address()))
    })()
    .context(|| "cannot write output".into())
}

/// Turns a `Response::Error` (or any response a command did not expect) into an error.
pub fn unexpected(response: Response) -> Error {
    match response {
        Response::Error { code, message } => Error(format!("the node refused: {code}: {message}{}", hint(code))),
        other => Error(format!("unexpected answer from the node: {other:?}")),
    }
}

/// Connects, sends one request, closes.
fn call(node: &NodeArg, key: &std::path::Path, options: Options, request: &Request) -> Result<Response> {
    let target = Target::parse(&node.node)?;
    let user = UserKey::load(key)?;
    let mut client = Client::connect(&target, &user, options)?;
    let response = client.call(request)?;
    client.close();
    Ok(response)
}

/// Builds, uploads and starts a deployment without a ledger; returns the workload id.
pub fn deploy(args: &DeployArgs, user: &UserKey, options: Options) -> Result<u64> {
    deploy_on::<crate::ledger::OverlayTransport>(args, user, options, None).map(|d| d.id)
}

/// A deployment done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    /// The workload id on the node.
    pub id: u64,
    /// The ledger contract it runs under (with a ledger).
    pub contract: Option<crate::onledger::DeployContract>,
}

/// Builds, uploads and starts a deployment; with a `ledger`, first creates and pays its
/// workload contract on the target node (or checks `--contract`), committed, and names it
/// in the manifest.
pub fn deploy_on<T: crate::ledger::Transport>(
    args: &DeployArgs,
    user: &UserKey,
    options: Options,
    ledger: Option<&mut crate::ledger::Ledger<T>>,
) -> Result<Deployed> {
    let target = Target::parse(&args.node.node)?;
    let arg = args.file.to_string_lossy().to_string();
    let (program, image, default_name) = if crate::registry::is_reference(&arg) {
        let pulled = crate::registry::pull(&arg, options.timeout.max(Duration::from_secs(60)))?;
        let name = arg.rsplit('/').next().and_then(|n| n.split([':', '@']).next()).unwrap_or("workload");
        let program = deploy::Program { payload: control::Payload::Wasm(pulled.module.clone()), wasm: pulled.module };
        (program, Some(pulled.image), deploy::default_name(std::path::Path::new(name)))
    } else {
        let bytes = std::fs::read(&args.file).context(|| format!("cannot read {}", args.file.display()))?;
        let program = deploy::program_from_bytes(bytes).map_err(|e| Error(format!("{}: {e}", args.file.display())))?;
        (program, None, deploy::default_name(&args.file))
    };
    let mut manifest = deploy::manifest(&args.spec(), &default_name, user.public_key(), &program.wasm)?;
    if image.is_some() {
        manifest.image = image;
        manifest.validate().map_err(|e| Error(format!("the manifest would be refused: {e}")))?;
    }
    let bundle = match (&args.bundle, &args.compiler) {
        (Some(p), _) => std::fs::read(p).context(|| format!("cannot read {}", p.display()))?,
        (None, Some(c)) if !c.trim().is_empty() => {
            let compiler = crate::compiler::parse_compiler(c)?;
            crate::compiler::compile(&compiler, &program.wasm, options.timeout)?
        }
        // No native code: the node runs the module in its interpreter.
        (None, _) => Vec::new(),
    };
    let seeds = seeds(args)?;
    if !seeds.is_empty() && manifest.limits.storage_bytes == 0 {
        bail!("--file, --dir and --stdin need a file area: give --storage-kb more than 0");
    }
    let contract = match ledger {
        Some(ledger) => {
            let key = crate::ledger::ledger_key(user)?;
            let resources = crate::onledger::workload_resources(&manifest);
            let price = args.price.unwrap_or(crate::onledger::WORKLOAD_PRICE_DEFAULT);
            let contract = crate::onledger::deploy_contract(ledger, &key, &target.key, resources, args.contract, price)?;
            manifest.contract = Some(contract.id);
            manifest.validate().map_err(|e| Error(format!("the manifest would be refused: {e}")))?;
            Some(contract)
        }
        None if args.contract.is_some() => bail!("--contract needs a ledger (`gridctl ledger trust`)"),
        None => None,
    };
    let mut request = deploy::request(user, &manifest, program, bundle);
    if !seeds.is_empty() {
        let Request::Deploy { signed_manifest, payload, bundle } = request else { bail!("internal: not a deploy request") };
        request = Request::DeployHeld { signed_manifest, payload, bundle };
    }
    let mut client = Client::connect(&target, user, options)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let response = client.call_with(None, &request, &mut |done, total| {
        if total >= 1 << 20 {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();
    let id = match response? {
        Response::Deployed { id } => id,
        other => return Err(unexpected(other)),
    };
    if !seeds.is_empty() {
        for (name, from) in &seeds {
            let bytes = crate::files::read_local(from)?;
            crate::files::put(&mut client, id, name, &bytes).map_err(|e| Error(format!("workload {id} (held): {}: {e}", from.display())))?;
        }
        let stdin = args.stdin.as_ref().map(|_| crate::files::STDIN_NAME.to_string());
        match client.call(&Request::Start { id, stdin })? {
            Response::Started => {}
            other => return Err(Error(format!("workload {id} (held, its files in place) did not start: {}", unexpected(other)))),
        }
    }
    client.close();
    Ok(Deployed { id, contract })
}

/// The files to put into the area before the run: `--dir`s, `--file`s, then `--stdin`
/// (as [`crate::files::STDIN_NAME`]), as (path in the area, local file).
fn seeds(args: &DeployArgs) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for d in &args.dirs {
        let (dir, under) = match d.rsplit_once(':') {
            Some((dir, under)) if !dir.is_empty() && !under.is_empty() => (dir, Some(under)),
            _ => (d.as_str(), None),
        };
        out.extend(crate::files::dir_seeds(std::path::Path::new(dir), under)?.into_iter().map(|s| (s.name, s.from)));
    }
    for f in &args.files {
        let s = crate::files::parse_file_seed(f)?;
        out.push((s.name, s.from));
    }
    if let Some(stdin) = &args.stdin {
        out.push((crate::files::STDIN_NAME.to_string(), stdin.clone()));
    }
    Ok(out)
}

fn logs(node: &NodeArg, key: &std::path::Path, options: Options, id: u64, follow: bool, out: &mut dyn Write) -> Result<()> {
    let target = Target::parse(&node.node)?;
    let user = UserKey::load(key)?;
    let mut client = Client::connect(&target, &user, options)?;
    let mut from_line = 0;
    loop {
        let (lines, next_line, finished) = match client.call(&Request::Logs { id, from_line })? {
            Response::Logs { lines, next_line, finished } => (lines, next_line, finished),
            other => return Err(unexpected(other)),
        };
        for line in &lines {
            writeln!(out, "{line}").context(|| "cannot write output".into())?;
        }
        out.flush().context(|| "cannot write output".into())?;
        if finished || (!follow && (lines.is_empty() || next_line <= from_line)) {
            break;
        }
        if lines.is_empty() {
            client.idle(Duration::from_secs(1))?;
        }
        from_line = next_line.max(from_line);
    }
    client.close();
    Ok(())
}

fn print_list(workloads: &[WorkloadSummary], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{:<6} {:<20} {:<24} {:<14} {:>10} RESTART", "ID", "NAME", "STATE", "BACKEND", "CPU_MS")?;
    for w in workloads {
        writeln!(
            out,
            "{:<6} {:<20} {:<24} {:<14} {:>10} {}",
            w.id,
            w.name,
            w.state.to_string(),
            w.backend,
            w.cpu_ms,
            if w.restart_on_boot { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

fn print_status(w: &WorkloadSummary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "id               {}", w.id)?;
    writeln!(out, "name             {}", w.name)?;
    writeln!(out, "state            {}", w.state)?;
    writeln!(out, "backend          {}", w.backend)?;
    writeln!(out, "cpu              {} ms", w.cpu_ms)?;
    writeln!(out, "restart on boot  {}", if w.restart_on_boot { "yes" } else { "no" })?;
    writeln!(out, "owner            {}", hex(&w.owner))
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{}.{:03} s", s, ms % 1000),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..0x10_0000 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", bytes as f64 / 1048576.0),
        _ => format!("{:.1} GiB", bytes as f64 / 1073741824.0),
    }
}

/// A short hint for a refusal code, when there is one.
fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthorized => " (the workload belongs to another key, or the request was not signed by you)",
        ErrorCode::NoSpace => " (the node has no room; remove workloads with `gridctl rm`)",
        _ => "",
    }
}
