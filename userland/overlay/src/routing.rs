//! Loop-free distance-vector routing in the manner of Babel (RFC 8966), as a sans-IO state
//! machine that knows nothing of sessions, crypto or bytes.
//!
//! Every node is the single source of one destination: its own overlay address. Neighbours
//! are opaque `NeighbourId`s with a link cost; the caller (the `node` module, or a test
//! harness) says when a neighbour comes up or goes down, feeds received `Message`s in and
//! carries `Output`s out. Messages are expected to arrive over authenticated links.
//!
//! What is kept from Babel:
//! - route announcements `(destination, seqno, metric)`, metric `INFINITY` = retraction;
//! - the feasibility condition: a node keeps per destination the feasibility distance
//!   `FD = (seqno, metric)`, the best distance it ever advertised for the current seqno, and
//!   only *selects* routes whose advertised distance is strictly better than FD (newer seqno,
//!   or same seqno and smaller metric). Along any chain of selected next hops FD strictly
//!   improves, so the forwarding graph has no loop at any instant (checked in property tests);
//! - seqno requests against starvation: a node whose only routes are unfeasible asks for a
//!   newer seqno; the source increments its seqno, intermediate nodes answer when they hold a
//!   route at least that new, or forward the request towards the source (hop-count bounded,
//!   duplicates suppressed for `request_timeout`);
//! - triggered updates on every change of a selected route, unicast full dumps to a new
//!   neighbour, periodic full dumps every `update_interval`, route expiry after `route_hold`
//!   without refresh, immediate retraction of all routes through a neighbour that goes down,
//!   and forgetting FDs of destinations unreachable for `source_gc`.
//!
//! Bounds against a misbehaving neighbour (issue 11 item 4, its cheaper parts): each
//! neighbour may hold routes to at most `max_destinations_per_neighbour` destinations (one
//! peer cannot fill the table), each neighbour's seqno requests draw from a token bucket,
//! and requests for our own address raise our seqno at most `OWN_SEQNO_RAISES_PER_SEC`
//! (after a burst of `OWN_SEQNO_RAISES_BURST`).
//!
//! Signed announcements (issue 11 item 4): every update carries its originator's `Origin`:
//! a key, the anchor of a hash chain, its signature over (destination, seqno, anchor), and
//! the chain element for the update's metric. Relays store it with the route and pass it on
//! with the element hashed once per unit of link cost (SEAD's hash-chain metrics: the
//! originator picks a random element for metric 0, the anchor is `METRIC_CHAIN_LEN` hashes
//! on). With a verifier installed (`set_verifier`; the node installs the ed25519 one,
//! simulations may install their own) an update is taken only when the key hashes to the
//! destination, the signature holds and the element hashes to the anchor in exactly
//! `METRIC_CHAIN_LEN - metric` steps. So no relay can invent a newer seqno for someone
//! else's address (the hijack "victim, newer seqno, metric 1"), announce an address whose
//! key it does not hold, or claim a smaller metric than it was told (that needs a hash
//! preimage). What is left to a liar: not adding its own link cost (repeating the metric
//! it heard), a one-hop understatement per liar on a path, and dropping what it then
//! attracts (data is sealed end to end, see `e2e`). Verified statements are remembered per
//! destination with their lowest verified element, so periodic dumps cost a comparison or a
//! hash, not a signature check; new signature checks draw from a per-neighbour budget. Our
//! own origin is set by the caller (`set_own_origin`) whenever `own_seqno` changes.
//!
//! What is left out: hellos/IHU and link-quality estimation (link liveness comes from the
//! session layer), prefixes other than one /128 per node, router-ids distinct from addresses.

use alloc::collections::btree_map::Entry;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use crate::address::Address;
use crate::guard::TokenBucket;
use crate::time::{Duration, Instant};

/// Raises of our own seqno on request, per second: a 16-bit seqno space then lasts hours
/// even under a neighbour that asks without pause (and a raise floods the whole grid).
const OWN_SEQNO_RAISES_PER_SEC: u32 = 1;
/// Burst of raises: reconvergence after a partition may need several in a row.
const OWN_SEQNO_RAISES_BURST: u32 = 16;

/// Steps of a metric hash chain: metrics up to `METRIC_CHAIN_LEN - 1` can be proven (with
/// link costs of 1, hops; more than the overlay's hop limit).
pub const METRIC_CHAIN_LEN: u16 = 64;

/// One step of a metric hash chain.
pub fn chain_step(element: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(b"gridos-overlay v1 metric chain..", element).as_bytes()
}

/// `steps` steps of a metric hash chain (at most `METRIC_CHAIN_LEN`).
pub fn chain(element: &[u8; 32], steps: u16) -> [u8; 32] {
    let mut e = *element;
    // Bounded by the chain's length.
    for _ in 0..steps.min(METRIC_CHAIN_LEN) {
        e = chain_step(&e);
    }
    e
}

/// An originator's proof that it announced (destination, seqno), and a relay's proof that
/// the metric is no smaller than it heard: the key (which must hash to the destination),
/// the chain's anchor, the signature over (destination, seqno, anchor), and the chain
/// element for the update's metric. Checked by the router's verifier and chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The originator's ed25519 public key.
    pub key: [u8; 32],
    /// `chain(element at metric 0, METRIC_CHAIN_LEN)`, signed.
    pub anchor: [u8; 32],
    /// The signature over destination, seqno and anchor (see `node::route_signature_message`).
    pub signature: [u8; 64],
    /// The chain element for the update's metric: `chain(element at 0, metric)`.
    pub element: [u8; 32],
}

impl Origin {
    /// No proof (retractions carry none; unsigned routers send none).
    pub const NONE: Origin = Origin { key: [0; 32], anchor: [0; 32], signature: [0; 64], element: [0; 32] };

    /// Whether both carry the same signed statement (key, anchor, signature).
    pub fn same_statement(&self, other: &Origin) -> bool {
        self.key == other.key && self.anchor == other.anchor && self.signature == other.signature
    }
}

/// Checks an origin for (destination, seqno); installed with `Router::set_verifier`.
pub type Verifier = fn(&Address, u16, &Origin) -> bool;

/// Where a unicast full dump to a neighbour is: our own route first, then every
/// destination after the last one sent (in address order; `None`: from the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DumpCursor {
    Own,
    After(Option<Address>),
}

/// A neighbour as the caller names it (the node uses its peer slot).
pub type NeighbourId = u32;

/// The unreachable metric.
pub const INFINITY: u16 = 0xffff;

/// A routing message between neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// "I can reach `destination` at distance (`seqno`, `metric`)"; `INFINITY` retracts.
    Update {
        /// The destination (its source's address).
        destination: Address,
        /// The source's sequence number this route is based on.
        seqno: u16,
        /// The sender's total metric, or `INFINITY`.
        metric: u16,
        /// The originator's proof for (destination, seqno).
        origin: Origin,
    },
    /// "Please send me a route to `destination` with seqno at least `seqno`".
    SeqnoRequest {
        /// The destination whose source should increase its seqno.
        destination: Address,
        /// The seqno wanted.
        seqno: u16,
        /// Hops the request may still travel.
        hop_count: u8,
    },
}

/// Where an output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One neighbour.
    One(NeighbourId),
    /// Every neighbour that is up.
    All,
}

/// A message to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    /// Recipients.
    pub to: Target,
    /// The message.
    pub message: Message,
}

/// Tunables and capacities.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Period of full dumps to all neighbours.
    pub update_interval: Duration,
    /// A route not refreshed for this long is retracted.
    pub route_hold: Duration,
    /// An unreachable destination's FD is forgotten after this long.
    pub source_gc: Duration,
    /// Identical seqno requests are not repeated or forwarded again within this time.
    pub request_timeout: Duration,
    /// Hop count of seqno requests we originate.
    pub request_hop_count: u8,
    /// Capacity of the destination table.
    pub max_destinations: usize,
    /// Capacity of the neighbour table.
    pub max_neighbours: usize,
    /// Capacity of the queue of unicast replies and requests.
    pub max_queued_outputs: usize,
    /// Most destinations one neighbour may hold routes to.
    pub max_destinations_per_neighbour: usize,
    /// New origin signatures checked per second for one neighbour's updates.
    pub verifications_per_neighbour_per_sec: u32,
    /// Burst allowance of that rate.
    pub verifications_per_neighbour_burst: u32,
    /// Seqno requests handled per second from one neighbour.
    pub requests_per_neighbour_per_sec: u32,
    /// Burst allowance of that rate.
    pub requests_per_neighbour_burst: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            update_interval: Duration::from_secs(16),
            route_hold: Duration::from_secs(56),
            source_gc: Duration::from_secs(180),
            request_timeout: Duration::from_secs(2),
            request_hop_count: 64,
            max_destinations: 16_384,
            max_neighbours: 64,
            max_queued_outputs: 4096,
            // A hub neighbour in a 1,000-node grid carries ~1,000 routes; a quarter of the
            // table means one neighbour can never take it all.
            max_destinations_per_neighbour: 4096,
            // After a partition a neighbour may relay one request per lost destination at
            // once (a burst the size of its quota); in steady state a few per second. Each
            // request costs us at most one reply or one forward (duplicates are suppressed
            // per destination), so this bounds the work one neighbour can ask for.
            // A new neighbour's first dump may carry a quota's worth of origins we have not
            // seen yet; after that, checks are rare (new seqnos). 256/s is ~1% of a core.
            verifications_per_neighbour_per_sec: 256,
            verifications_per_neighbour_burst: 4096,
            requests_per_neighbour_per_sec: 256,
            requests_per_neighbour_burst: 4096,
        }
    }
}

/// Why the router refused an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingError {
    /// The neighbour table is full.
    TooManyNeighbours,
    /// The neighbour is already up.
    DuplicateNeighbour,
    /// Link costs are 1..INFINITY.
    InvalidCost,
}

/// A (seqno, metric) pair, ordered as Babel's feasibility condition orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Distance {
    /// The source's sequence number.
    pub seqno: u16,
    /// The metric.
    pub metric: u16,
}

/// `a` is newer than `b` in 16-bit serial arithmetic (RFC 1982 style).
pub fn seqno_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Distance {
    /// Strictly better: newer seqno, or equal seqno and smaller metric.
    pub fn better_than(&self, other: &Distance) -> bool {
        seqno_newer(self.seqno, other.seqno) || (self.seqno == other.seqno && self.metric < other.metric)
    }

    /// Babel's feasibility condition for an advertised distance against an FD.
    pub fn feasible(&self, fd: Option<Distance>) -> bool {
        self.metric == INFINITY || fd.is_none_or(|fd| self.better_than(&fd))
    }
}

/// A route as stored: what one neighbour last advertised for one destination.
#[derive(Clone, Copy, Debug)]
struct Route {
    neighbour: NeighbourId,
    advertised: Distance,
    origin: Origin,
    expires_at: Instant,
}

/// Per-destination state.
#[derive(Clone, Debug)]
struct Dest {
    fd: Option<Distance>,
    routes: Vec<Route>,
    selected: Option<NeighbourId>,
    /// The selected route as of the last `reselect` (what we advertise).
    view: Option<RouteView>,
    /// Last time a route was selected (for FD garbage collection).
    reachable_at: Instant,
    /// The last seqno request we originated or forwarded: seqno, when, to whom.
    requested: Option<(u16, Instant, NeighbourId)>,
    /// The newest (seqno, origin) the verifier accepted (checked again only when it changes),
    /// its element being the lowest-metric one verified against the anchor (with its metric).
    verified: Option<(u16, Origin)>,
    verified_metric: u16,
}

/// The selected route to a destination, as others see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteView {
    /// The neighbour packets go to.
    pub next_hop: NeighbourId,
    /// The route's seqno.
    pub seqno: u16,
    /// Total metric (advertised + link cost).
    pub metric: u16,
}

/// Counters for tests and monitoring.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Messages handed out by `poll_output` (a `Target::All` output counts once).
    pub outputs: u64,
    /// Messages received.
    pub inputs: u64,
    /// Unicast outputs dropped because the queue was full.
    pub dropped_outputs: u64,
    /// Updates ignored because the destination table was full.
    pub dropped_destinations: u64,
    /// Updates ignored because their neighbour holds its quota of destinations.
    pub dropped_over_quota: u64,
    /// Seqno requests ignored by a neighbour's budget or our own seqno's pacing.
    pub dropped_requests: u64,
    /// Updates whose origin did not verify (forged seqno, foreign address, bad signature).
    pub dropped_bad_origin: u64,
    /// Updates dropped because their neighbour's verification budget ran dry.
    pub dropped_unverified: u64,
    /// Origin signatures checked.
    pub verified_origins: u64,
    /// Updates whose metric the hash chain does not prove (understated, or too long).
    pub dropped_bad_metric: u64,
}

/// The routing state machine of one node.
pub struct Router {
    own: Address,
    own_seqno: u16,
    config: Config,
    neighbours: Vec<(NeighbourId, u16)>,
    dests: BTreeMap<Address, Dest>,
    dirty: BTreeSet<Address>,
    own_dirty: bool,
    queue: VecDeque<Output>,
    /// Pending unicast full dumps: neighbour, and where the dump is.
    dumps: Vec<(NeighbourId, DumpCursor)>,
    next_periodic: Instant,
    /// Routes held per neighbour (for the quota).
    route_counts: BTreeMap<NeighbourId, usize>,
    /// Seqno request budget per neighbour.
    request_budgets: BTreeMap<NeighbourId, TokenBucket>,
    /// Budget of raises of our own seqno on request.
    own_seqno_raises: Option<TokenBucket>,
    /// Origin verification budget per neighbour.
    verify_budgets: BTreeMap<NeighbourId, TokenBucket>,
    verifier: Option<Verifier>,
    /// Our signed (seqno, origin), set by the caller.
    own_origin: Option<(u16, Origin)>,
    stats: Stats,
}

impl Router {
    /// A router for the node whose address is `own`, first periodic dump at `now + update_interval`.
    pub fn new(own: Address, config: Config, now: Instant) -> Router {
        assert!(config.max_neighbours > 0 && config.max_destinations > 0);
        assert!(config.route_hold > config.update_interval);
        Router {
            own,
            own_seqno: 0,
            config,
            neighbours: Vec::new(),
            dests: BTreeMap::new(),
            dirty: BTreeSet::new(),
            own_dirty: false,
            queue: VecDeque::new(),
            dumps: Vec::new(),
            next_periodic: now + config.update_interval,
            route_counts: BTreeMap::new(),
            request_budgets: BTreeMap::new(),
            own_seqno_raises: None,
            verify_budgets: BTreeMap::new(),
            verifier: None,
            own_origin: None,
            stats: Stats::default(),
        }
    }

    /// Installs the origin check: from now on, updates whose origin it refuses are dropped.
    /// Without one (simulations of the routing logic alone) origins are carried unchecked.
    pub fn set_verifier(&mut self, verifier: Verifier) {
        self.verifier = Some(verifier);
    }

    /// Our signed proof for `seqno` (call whenever `own_seqno` changes, before polling).
    pub fn set_own_origin(&mut self, seqno: u16, origin: Origin) {
        self.own_origin = Some((seqno, origin));
    }

    /// The seqno our current own origin was set for.
    pub fn own_origin_seqno(&self) -> Option<u16> {
        self.own_origin.map(|(s, _)| s)
    }

    fn own_update(&self) -> Message {
        let origin = self.own_origin.filter(|(s, _)| *s == self.own_seqno).map_or(Origin::NONE, |(_, o)| o);
        Message::Update { destination: self.own, seqno: self.own_seqno, metric: 0, origin }
    }

    /// Our own address.
    pub fn address(&self) -> Address {
        self.own
    }

    /// Our own current seqno.
    pub fn own_seqno(&self) -> u16 {
        self.own_seqno
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The neighbours that are up, with their costs.
    pub fn neighbours(&self) -> &[(NeighbourId, u16)] {
        &self.neighbours
    }

    fn cost(&self, neighbour: NeighbourId) -> Option<u16> {
        self.neighbours.iter().find(|(n, _)| *n == neighbour).map(|(_, c)| *c)
    }

    /// A neighbour came up with link cost `cost` (>= 1): it gets a full dump.
    pub fn neighbour_up(&mut self, neighbour: NeighbourId, cost: u16) -> Result<(), RoutingError> {
        if cost == 0 || cost == INFINITY {
            return Err(RoutingError::InvalidCost);
        }
        if self.cost(neighbour).is_some() {
            return Err(RoutingError::DuplicateNeighbour);
        }
        if self.neighbours.len() >= self.config.max_neighbours {
            return Err(RoutingError::TooManyNeighbours);
        }
        self.neighbours.push((neighbour, cost));
        self.route_counts.remove(&neighbour);
        self.request_budgets.remove(&neighbour);
        self.verify_budgets.remove(&neighbour);
        self.dumps.retain(|(n, _)| *n != neighbour);
        self.dumps.push((neighbour, DumpCursor::Own));
        debug_assert!(self.neighbours.len() <= self.config.max_neighbours);
        Ok(())
    }

    /// Sends `neighbour` (already up) a full dump again: its session was re-established,
    /// and a peer that restarted with the same key has forgotten every route it had.
    pub fn resend_dump(&mut self, neighbour: NeighbourId) {
        if self.cost(neighbour).is_some() {
            self.dumps.retain(|(n, _)| *n != neighbour);
            self.dumps.push((neighbour, DumpCursor::Own));
        }
    }

    /// A neighbour went away: every route through it is dropped at once.
    pub fn neighbour_down(&mut self, now: Instant, neighbour: NeighbourId) {
        let before = self.neighbours.len();
        self.neighbours.retain(|(n, _)| *n != neighbour);
        if self.neighbours.len() == before {
            return;
        }
        self.dumps.retain(|(n, _)| *n != neighbour);
        self.queue.retain(|o| o.to != Target::One(neighbour));
        self.route_counts.remove(&neighbour);
        self.request_budgets.remove(&neighbour);
        self.verify_budgets.remove(&neighbour);
        let affected: Vec<Address> = self
            .dests
            .iter()
            .filter(|(_, d)| d.routes.iter().any(|r| r.neighbour == neighbour))
            .map(|(a, _)| *a)
            .collect();
        for address in affected {
            if let Some(dest) = self.dests.get_mut(&address) {
                dest.routes.retain(|r| r.neighbour != neighbour);
            }
            self.reselect(now, address);
        }
    }

    /// The selected route to `destination`, if any.
    pub fn route(&self, destination: &Address) -> Option<RouteView> {
        self.dests.get(destination)?.view
    }

    /// The next hop towards `destination`.
    pub fn next_hop(&self, destination: &Address) -> Option<NeighbourId> {
        self.route(destination).map(|r| r.next_hop)
    }

    /// The newest verified (seqno, origin) held for `destination`, with the lowest verified
    /// metric (whose element the origin holds).
    pub fn origin(&self, destination: &Address) -> Option<(u16, Origin, u16)> {
        self.dests.get(destination)?.verified.map(|(s, o)| (s, o, self.dests.get(destination).map_or(INFINITY, |d| d.verified_metric)))
    }

    /// The feasibility distance held for `destination`.
    pub fn feasibility_distance(&self, destination: &Address) -> Option<Distance> {
        self.dests.get(destination).and_then(|d| d.fd)
    }

    /// Everything held about `destination` (routes, FD, pending request), for diagnostics.
    pub fn describe(&self, destination: &Address) -> Option<&dyn core::fmt::Debug> {
        self.dests.get(destination).map(|d| d as &dyn core::fmt::Debug)
    }

    /// Number of destinations with a selected route.
    pub fn reachable_count(&self) -> usize {
        self.dests.values().filter(|d| d.selected.is_some()).count()
    }

    /// Every destination with a selected route.
    pub fn routes(&self) -> impl Iterator<Item = (Address, RouteView)> + '_ {
        self.dests.keys().filter_map(|a| self.route(a).map(|r| (*a, r)))
    }

    fn total_metric(&self, route: &Route) -> Option<u16> {
        total_metric(route, &self.neighbours)
    }

    /// Handles one message from `from` (which must be up; messages from others are ignored).
    pub fn handle_message(&mut self, now: Instant, from: NeighbourId, message: Message) {
        if self.cost(from).is_none() {
            return;
        }
        self.stats.inputs += 1;
        match message {
            Message::Update { destination, seqno, metric, origin } => {
                if metric == INFINITY || self.origin_ok(now, from, &destination, seqno, metric, &origin) {
                    self.handle_update(now, from, destination, seqno, metric, origin)
                }
            }
            Message::SeqnoRequest { destination, seqno, hop_count } => {
                self.handle_request(now, from, destination, seqno, hop_count)
            }
        }
    }

    /// Whether `origin` proves (destination, seqno) and `metric`: the statement remembered,
    /// or its signature checked within `from`'s budget; then the metric's chain element.
    fn origin_ok(&mut self, now: Instant, from: NeighbourId, destination: &Address, seqno: u16, metric: u16, origin: &Origin) -> bool {
        let Some(verify) = self.verifier else { return true };
        if metric >= METRIC_CHAIN_LEN {
            self.stats.dropped_bad_metric += 1;
            return false;
        }
        let held = self.dests.get(destination).and_then(|d| d.verified.map(|v| (v, d.verified_metric)));
        let known = held.filter(|((s, o), _)| *s == seqno && o.same_statement(origin));
        if known.is_none() {
            let (rate, burst) = (self.config.verifications_per_neighbour_per_sec, self.config.verifications_per_neighbour_burst);
            let budget = self.verify_budgets.entry(from).or_insert_with(|| TokenBucket::full(burst, now));
            if !budget.take(now, rate, burst) {
                self.stats.dropped_unverified += 1;
                return false;
            }
            self.stats.verified_origins += 1;
            if !verify(destination, seqno, origin) {
                self.stats.dropped_bad_origin += 1;
                return false;
            }
        }
        // The element for `metric` must hash to a verified element of a smaller metric, or
        // to the anchor: at most METRIC_CHAIN_LEN steps.
        let proven = match known {
            Some(((_, o), m0)) if metric >= m0 => chain(&o.element, metric - m0) == origin.element,
            Some(((_, o), m0)) => chain(&origin.element, m0 - metric) == o.element,
            None => chain(&origin.element, METRIC_CHAIN_LEN - metric) == origin.anchor,
        };
        if !proven {
            self.stats.dropped_bad_metric += 1;
            return false;
        }
        if let Some(dest) = self.dests.get_mut(destination) {
            let newer = dest.verified.is_none_or(|(s, o)| seqno_newer(seqno, s) || (s == seqno && !o.same_statement(origin)));
            if newer || (known.is_some() && metric < dest.verified_metric) {
                dest.verified = Some((seqno, *origin));
                dest.verified_metric = metric;
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_update(&mut self, now: Instant, from: NeighbourId, destination: Address, seqno: u16, metric: u16, origin: Origin) {
        if destination == self.own {
            return;
        }
        let advertised = Distance { seqno, metric };
        let expires_at = now + self.config.route_hold;
        let holds = self.dests.get(&destination).is_some_and(|d| d.routes.iter().any(|r| r.neighbour == from));
        let held = self.route_counts.get(&from).copied().unwrap_or(0);
        if !holds && metric != INFINITY && held >= self.config.max_destinations_per_neighbour {
            self.stats.dropped_over_quota += 1;
            return;
        }
        let full = self.dests.len() >= self.config.max_destinations;
        let dest = match self.dests.entry(destination) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) if metric == INFINITY => return,
            Entry::Vacant(_) if full => {
                self.stats.dropped_destinations += 1;
                return;
            }
            Entry::Vacant(entry) => entry.insert(Dest {
                fd: None,
                routes: Vec::new(),
                selected: None,
                view: None,
                reachable_at: now,
                requested: None,
                verified: None,
                verified_metric: INFINITY,
            }),
        };
        if metric != INFINITY && self.verifier.is_some() && dest.verified.is_none() {
            // First sight of this destination (checked in `origin_ok` before it existed).
            dest.verified = Some((seqno, origin));
            dest.verified_metric = metric;
        }
        match dest.routes.iter_mut().find(|r| r.neighbour == from) {
            Some(route) => {
                route.advertised = advertised;
                route.expires_at = expires_at;
                if metric != INFINITY {
                    route.origin = origin;
                }
            }
            None if metric != INFINITY => {
                dest.routes.push(Route { neighbour: from, advertised, origin, expires_at });
                *self.route_counts.entry(from).or_insert(0) += 1;
            }
            None => {}
        }
        debug_assert!(dest.routes.len() <= self.config.max_neighbours);
        let selected_elsewhere = dest.selected.is_some_and(|n| n != from);
        let (changed, request) = select(dest, &self.neighbours, now);
        if changed {
            self.dirty.insert(destination);
        }
        if let Some(neighbour) = request {
            self.request_seqno(now, destination, neighbour);
        }
        if metric == INFINITY && selected_elsewhere {
            // Help a retracting neighbour find an alternative quickly (RFC 8966 3.8.2.1).
            if let Some(reply) = self.update_for(destination) {
                self.enqueue(Output { to: Target::One(from), message: reply });
            }
        }
    }

    fn handle_request(&mut self, now: Instant, from: NeighbourId, destination: Address, seqno: u16, hop_count: u8) {
        let (rate, burst) = (self.config.requests_per_neighbour_per_sec, self.config.requests_per_neighbour_burst);
        let budget = self.request_budgets.entry(from).or_insert_with(|| TokenBucket::full(burst, now));
        if !budget.take(now, rate, burst) {
            self.stats.dropped_requests += 1;
            return;
        }
        if destination == self.own {
            if seqno_newer(seqno, self.own_seqno) {
                // Paced by a bucket: reconvergence needs a few raises in a row, a neighbour
                // asking for thousands is abusing us (each raise floods the whole grid).
                let (rate, burst) = (OWN_SEQNO_RAISES_PER_SEC, OWN_SEQNO_RAISES_BURST);
                let raises = self.own_seqno_raises.get_or_insert_with(|| TokenBucket::full(burst, now));
                if !raises.take(now, rate, burst) {
                    self.stats.dropped_requests += 1;
                    return;
                }
                self.own_seqno = self.own_seqno.wrapping_add(1);
                self.own_dirty = true;
            } else {
                let reply = self.own_update();
                self.enqueue(Output { to: Target::One(from), message: reply });
            }
            return;
        }
        if let Some(view) = self.route(&destination) {
            if !seqno_newer(seqno, view.seqno) {
                if let Some(reply) = self.update_for(destination) {
                    self.enqueue(Output { to: Target::One(from), message: reply });
                }
                return;
            }
        }
        if hop_count < 2 {
            return;
        }
        let forward_to = self.request_target(&destination, from);
        let timeout = self.config.request_timeout;
        let Some(dest) = self.dests.get_mut(&destination) else { return };
        let Some(next) = forward_to else { return };
        if let Some((last, at, to)) = dest.requested {
            if !seqno_newer(seqno, last) && now < at + timeout && to == next {
                return;
            }
        }
        dest.requested = Some((seqno, now, next));
        let message = Message::SeqnoRequest { destination, seqno, hop_count: hop_count - 1 };
        self.enqueue(Output { to: Target::One(next), message });
    }

    /// The neighbour to forward a request to: the selected next hop, else the best finite route.
    fn request_target(&self, destination: &Address, not: NeighbourId) -> Option<NeighbourId> {
        let dest = self.dests.get(destination)?;
        if let Some(n) = dest.selected.filter(|n| *n != not) {
            return Some(n);
        }
        dest.routes
            .iter()
            .filter(|r| r.neighbour != not)
            .filter_map(|r| self.total_metric(r).map(|m| (m, r.neighbour)))
            .min()
            .map(|(_, n)| n)
    }

    /// The update we would send now for `destination` (a retraction when unreachable).
    fn update_for(&self, destination: Address) -> Option<Message> {
        if destination == self.own {
            return Some(self.own_update());
        }
        let dest = self.dests.get(&destination)?;
        match self.route(&destination) {
            Some(view) => {
                let route = dest.routes.iter().find(|r| r.neighbour == view.next_hop);
                let origin = route.filter(|r| r.origin != Origin::NONE).map_or(Origin::NONE, |r| {
                    // Our metric is what we heard plus the link's cost: hash that many times.
                    let steps = view.metric.saturating_sub(r.advertised.metric);
                    Origin { element: chain(&r.origin.element, steps), ..r.origin }
                });
                Some(Message::Update { destination, seqno: view.seqno, metric: view.metric, origin })
            }
            None => {
                let seqno = dest.fd.map(|fd| fd.seqno).or_else(|| dest.routes.first().map(|r| r.advertised.seqno))?;
                Some(Message::Update { destination, seqno, metric: INFINITY, origin: Origin::NONE })
            }
        }
    }

    /// Re-runs route selection for one destination and schedules updates and requests.
    fn reselect(&mut self, now: Instant, destination: Address) {
        let Some(dest) = self.dests.get_mut(&destination) else { return };
        let (changed, request) = select(dest, &self.neighbours, now);
        if changed {
            self.dirty.insert(destination);
        }
        if let Some(neighbour) = request {
            self.request_seqno(now, destination, neighbour);
        }
    }

    fn request_seqno(&mut self, now: Instant, destination: Address, neighbour: NeighbourId) {
        let timeout = self.config.request_timeout;
        let hop_count = self.config.request_hop_count;
        let Some(dest) = self.dests.get_mut(&destination) else { return };
        let Some(fd) = dest.fd else { return };
        let seqno = fd.seqno.wrapping_add(1);
        if let Some((last, at, to)) = dest.requested {
            if !seqno_newer(seqno, last) && now < at + timeout && to == neighbour {
                return;
            }
        }
        dest.requested = Some((seqno, now, neighbour));
        let message = Message::SeqnoRequest { destination, seqno, hop_count };
        self.enqueue(Output { to: Target::One(neighbour), message });
    }

    fn enqueue(&mut self, output: Output) {
        if self.queue.len() >= self.config.max_queued_outputs {
            self.stats.dropped_outputs += 1;
            return;
        }
        self.queue.push_back(output);
    }

    /// Records that an update is being advertised: FDs only ever improve (Babel 3.7.3).
    fn note_advertised(&mut self, message: &Message) {
        let Message::Update { destination, seqno, metric, .. } = *message else { return };
        if metric == INFINITY || destination == self.own {
            return;
        }
        let Some(dest) = self.dests.get_mut(&destination) else { return };
        let advertised = Distance { seqno, metric };
        if dest.fd.is_none_or(|fd| advertised.better_than(&fd)) {
            dest.fd = Some(advertised);
        }
        debug_assert!(dest.fd.is_some_and(|fd| !advertised.better_than(&fd)));
    }

    /// The next message to send, if any. Call until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.next_output()?;
        self.note_advertised(&output.message);
        self.stats.outputs += 1;
        Some(output)
    }

    fn next_output(&mut self) -> Option<Output> {
        if let Some(output) = self.queue.pop_front() {
            return Some(output);
        }
        if self.own_dirty {
            self.own_dirty = false;
            return Some(Output { to: Target::All, message: self.own_update() });
        }
        // Bounded: each iteration either returns or removes one dump cursor or dirty entry.
        while let Some(&(neighbour, cursor)) = self.dumps.last() {
            if cursor == DumpCursor::Own {
                if let Some(last) = self.dumps.last_mut() {
                    last.1 = DumpCursor::After(None);
                }
                return Some(Output { to: Target::One(neighbour), message: self.own_update() });
            }
            // Every destination in address order, from the first (not from our own address:
            // that skipped every destination whose address sorts below ours).
            let DumpCursor::After(after) = cursor else { continue };
            let lower = after.map_or(core::ops::Bound::Unbounded, core::ops::Bound::Excluded);
            let next = self
                .dests
                .range((lower, core::ops::Bound::Unbounded))
                .find(|(a, d)| **a != self.own && d.selected.is_some() && self.route(a).is_some())
                .map(|(a, _)| *a);
            match next {
                Some(address) => {
                    if let Some(last) = self.dumps.last_mut() {
                        last.1 = DumpCursor::After(Some(address));
                    }
                    if let Some(message) = self.update_for(address) {
                        return Some(Output { to: Target::One(neighbour), message });
                    }
                }
                None => {
                    self.dumps.pop();
                }
            }
        }
        while let Some(address) = self.dirty.pop_first() {
            if let Some(message) = self.update_for(address) {
                return Some(Output { to: Target::All, message });
            }
        }
        None
    }

    /// When `handle_timeout` wants to be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_periodic)
    }

    /// Runs periodic work due at `now`: full dump, route expiry, starvation checks, FD GC.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_periodic {
            return;
        }
        self.next_periodic = now + self.config.update_interval;
        self.own_dirty = true;
        let hold = self.config.route_hold;
        let gc = self.config.source_gc;
        let mut touched = Vec::new();
        let counts = &mut self.route_counts;
        self.dests.retain(|address, dest| {
            let before = dest.routes.len();
            for route in dest.routes.iter_mut() {
                if route.expires_at <= now && route.advertised.metric != INFINITY {
                    route.advertised.metric = INFINITY;
                    route.expires_at = now + hold;
                }
            }
            dest.routes.retain(|r| {
                let keep = r.advertised.metric != INFINITY || r.expires_at > now;
                if !keep {
                    if let Some(c) = counts.get_mut(&r.neighbour) {
                        *c = c.saturating_sub(1);
                    }
                }
                keep
            });
            let _ = before;
            touched.push(*address);
            let forgotten = dest.selected.is_none() && dest.routes.is_empty() && now.saturating_since(dest.reachable_at) >= gc;
            !forgotten
        });
        for address in touched {
            if !self.dests.contains_key(&address) {
                continue;
            }
            self.reselect(now, address);
            if self.route(&address).is_some() {
                self.dirty.insert(address);
            }
        }
    }
}

/// A route's metric through its neighbour, if finite and the neighbour is up.
fn total_metric(route: &Route, neighbours: &[(NeighbourId, u16)]) -> Option<u16> {
    if route.advertised.metric == INFINITY {
        return None;
    }
    let cost = neighbours.iter().find(|(n, _)| *n == route.neighbour)?.1;
    let total = route.advertised.metric.saturating_add(cost);
    (total < INFINITY).then_some(total)
}

/// Babel route selection for one destination: the best feasible route, keeping the current
/// next hop on ties. Returns whether the advertised view changed, and a neighbour to send a
/// seqno request to when only unfeasible routes exist or one is clearly better (starvation).
fn select(dest: &mut Dest, neighbours: &[(NeighbourId, u16)], now: Instant) -> (bool, Option<NeighbourId>) {
    let old = dest.view;
    let mut best: Option<(u16, bool, NeighbourId, u16)> = None;
    let mut best_unfeasible: Option<(u16, NeighbourId)> = None;
    for route in &dest.routes {
        let Some(metric) = total_metric(route, neighbours) else { continue };
        if route.advertised.feasible(dest.fd) {
            let key = (metric, old.is_none_or(|o| o.next_hop != route.neighbour), route.neighbour, route.advertised.seqno);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        } else if best_unfeasible.is_none_or(|(m, _)| metric < m) {
            best_unfeasible = Some((metric, route.neighbour));
        }
    }
    let new = best.map(|(metric, _, next_hop, seqno)| RouteView { next_hop, seqno, metric });
    dest.selected = new.map(|v| v.next_hop);
    dest.view = new;
    if new.is_some() {
        dest.reachable_at = now;
    }
    debug_assert!(new.is_none_or(|v| v.metric < INFINITY));
    let request = best_unfeasible.filter(|(m, _)| new.is_none_or(|v| *m < v.metric)).map(|(_, n)| n);
    (new != old, request)
}

#[cfg(test)]
mod test {
    use super::*;

    fn addr(i: u8) -> Address {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = i;
        Address(a)
    }

    fn drain(r: &mut Router) -> Vec<Output> {
        core::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn feasibility_condition() {
        let fd = Some(Distance { seqno: 5, metric: 10 });
        assert!(Distance { seqno: 5, metric: 9 }.feasible(fd));
        assert!(!Distance { seqno: 5, metric: 10 }.feasible(fd));
        assert!(!Distance { seqno: 4, metric: 1 }.feasible(fd));
        assert!(Distance { seqno: 6, metric: 500 }.feasible(fd));
        assert!(Distance { seqno: 0, metric: INFINITY }.feasible(fd));
        assert!(Distance { seqno: 0, metric: 3 }.feasible(None));
        assert!(seqno_newer(0, 0xffff));
        assert!(!seqno_newer(0x8000, 0));
    }

    #[test]
    fn new_neighbour_gets_dump_and_learned_route_is_advertised() {
        let now = Instant::ZERO;
        let mut r = Router::new(addr(1), Config::default(), now);
        r.neighbour_up(7, 1).unwrap();
        assert_eq!(r.neighbour_up(7, 1), Err(RoutingError::DuplicateNeighbour));
        let out = drain(&mut r);
        assert_eq!(out, [Output { to: Target::One(7), message: Message::Update { destination: addr(1), seqno: 0, metric: 0, origin: Origin::NONE } }]);
        r.handle_message(now, 7, Message::Update { destination: addr(2), seqno: 3, metric: 4, origin: Origin::NONE });
        assert_eq!(r.route(&addr(2)), Some(RouteView { next_hop: 7, seqno: 3, metric: 5 }));
        let out = drain(&mut r);
        assert_eq!(out, [Output { to: Target::All, message: Message::Update { destination: addr(2), seqno: 3, metric: 5, origin: Origin::NONE } }]);
        assert_eq!(r.feasibility_distance(&addr(2)), Some(Distance { seqno: 3, metric: 5 }));
    }

    #[test]
    fn a_new_neighbours_dump_holds_destinations_on_both_sides_of_our_address() {
        // Found booted (gridctl through a gateway node): the dump went on from our own
        // address in address order, so a client never heard of nodes whose addresses sort
        // below the gateway's until the periodic dump, 16 s later.
        let now = Instant::ZERO;
        let mut r = Router::new(addr(5), Config::default(), now);
        r.neighbour_up(7, 1).unwrap();
        for d in [2, 3, 9] {
            r.handle_message(now, 7, Message::Update { destination: addr(d), seqno: 1, metric: 1, origin: Origin::NONE });
        }
        let _ = drain(&mut r);
        r.neighbour_up(8, 1).unwrap();
        let dumped: Vec<Address> = drain(&mut r)
            .into_iter()
            .filter(|o| o.to == Target::One(8))
            .filter_map(|o| match o.message {
                Message::Update { destination, .. } => Some(destination),
                _ => None,
            })
            .collect();
        assert_eq!(dumped, [addr(5), addr(2), addr(3), addr(9)]);
    }

    #[test]
    fn unfeasible_route_is_not_selected_and_triggers_seqno_request() {
        let now = Instant::ZERO;
        let mut r = Router::new(addr(1), Config::default(), now);
        r.neighbour_up(7, 1).unwrap();
        r.neighbour_up(8, 1).unwrap();
        r.handle_message(now, 7, Message::Update { destination: addr(2), seqno: 3, metric: 1, origin: Origin::NONE });
        let _ = drain(&mut r); // FD becomes (3, 2)
        r.handle_message(now, 8, Message::Update { destination: addr(2), seqno: 3, metric: 5, origin: Origin::NONE });
        r.neighbour_down(now, 7);
        assert_eq!(r.route(&addr(2)), None, "(3,5) is not better than FD (3,2)");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: Target::One(8), message: Message::SeqnoRequest { destination: addr(2), seqno: 4, hop_count: 64 } }));
        assert!(out.contains(&Output { to: Target::All, message: Message::Update { destination: addr(2), seqno: 3, metric: INFINITY, origin: Origin::NONE } }), "{out:?}");
        r.handle_message(now, 8, Message::Update { destination: addr(2), seqno: 4, metric: 5, origin: Origin::NONE });
        assert_eq!(r.next_hop(&addr(2)), Some(8));
    }

    #[test]
    fn source_answers_seqno_request_by_incrementing() {
        let now = Instant::ZERO;
        let mut r = Router::new(addr(1), Config::default(), now);
        r.neighbour_up(7, 1).unwrap();
        let _ = drain(&mut r);
        r.handle_message(now, 7, Message::SeqnoRequest { destination: addr(1), seqno: 1, hop_count: 5 });
        assert_eq!(r.own_seqno(), 1);
        assert_eq!(drain(&mut r), [Output { to: Target::All, message: Message::Update { destination: addr(1), seqno: 1, metric: 0, origin: Origin::NONE } }]);
    }

    #[test]
    fn routes_expire_without_refresh() {
        let mut now = Instant::ZERO;
        let config = Config::default();
        let mut r = Router::new(addr(1), config, now);
        r.neighbour_up(7, 1).unwrap();
        r.handle_message(now, 7, Message::Update { destination: addr(2), seqno: 0, metric: 1, origin: Origin::NONE });
        for _ in 0..10 {
            now = r.poll_timeout().unwrap();
            r.handle_timeout(now);
            let _ = drain(&mut r);
        }
        assert_eq!(r.route(&addr(2)), None);
    }
}
