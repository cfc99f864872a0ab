//! Several disks as one store: placement by free space, and serving on when a disk dies.
//!
//! Shards are named by `(owner, key)` as on one disk. Each shard lives on one disk (redundancy across disks and nodes is the erasure-coding
//! layer's job, above this). `put` picks the healthy disk with the most free space; a
//! disk whose device returns an error is marked failed and skipped from then on, and
//! the shards on the other disks stay readable. Reviving a failed disk means mounting
//! it again and handing it to a new `MultiStore`.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError};

use crate::error::{Error, MountError};
use crate::merkle::StorageProof;
use crate::store::{Key, Owner, OwnerUsage, ShardInfo, ShardStore, Stat};

/// Upper bound on disks per node; keeps every loop here bounded.
pub const DISKS_MAX: usize = 64;

/// A device [`MultiStore::mount_all`] could not mount.
#[derive(Debug)]
pub struct Refused<D> {
    /// Its position in the list handed to `mount_all`.
    pub index: usize,
    /// Why mount refused it.
    pub error: MountError,
    /// The device, untouched.
    pub device: D,
}

struct Disk<D: BlockDevice> {
    store: ShardStore<D>,
    failed: bool,
}

/// A set of shard stores, one per disk.
pub struct MultiStore<D: BlockDevice> {
    disks: Vec<Disk<D>>,
}

impl<D: BlockDevice> MultiStore<D> {
    /// Groups mounted (or freshly formatted) stores. At most [`DISKS_MAX`] are kept.
    pub fn new(stores: Vec<ShardStore<D>>) -> Self {
        let disks: Vec<Disk<D>> =
            stores.into_iter().take(DISKS_MAX).map(|store| Disk { store, failed: false }).collect();
        assert!(disks.len() <= DISKS_MAX);
        MultiStore { disks }
    }

    /// Mounts every device; the ones refused come back with their error (and are not
    /// part of the store), so the node keeps serving from the disks that mounted.
    pub fn mount_all(devices: Vec<D>) -> (Self, Vec<Refused<D>>) {
        let mut stores = Vec::new();
        let mut refused = Vec::new();
        for (index, device) in devices.into_iter().enumerate().take(DISKS_MAX) {
            match ShardStore::try_mount(device) {
                Ok(store) => stores.push(store),
                Err((error, device)) => refused.push(Refused { index, error, device }),
            }
        }
        (MultiStore::new(stores), refused)
    }

    /// Stores `owner`'s shard on the healthy disk with the most free space that takes it
    /// (or where the owner already has it). Returns that disk's index. `key` must be
    /// `blake3(bytes)` (checked: one hashing pass).
    pub fn put(&mut self, owner: &Owner, key: Key, bytes: &[u8]) -> Result<usize, Error> {
        if bytes.len() > crate::SHARD_SIZE_MAX_BYTES {
            return Err(Error::TooLarge);
        }
        if *blake3::hash(bytes).as_bytes() != key {
            return Err(Error::KeyMismatch);
        }
        self.put_prehashed(owner, key, bytes)
    }

    /// Stores `bytes` as `owner`'s shard (as [`put`](Self::put)) and returns its key,
    /// `blake3(bytes)`, hashed once here, with the disk's index.
    pub fn put_bytes(&mut self, owner: &Owner, bytes: &[u8]) -> Result<(Key, usize), Error> {
        if bytes.len() > crate::SHARD_SIZE_MAX_BYTES {
            return Err(Error::TooLarge);
        }
        let key = *blake3::hash(bytes).as_bytes();
        self.put_prehashed(owner, key, bytes).map(|disk| (key, disk))
    }

    /// [`put`](Self::put) of bytes whose key the caller has just computed over them
    /// (see [`ShardStore::put_prehashed`]): no second hashing pass.
    pub fn put_prehashed(&mut self, owner: &Owner, key: Key, bytes: &[u8]) -> Result<usize, Error> {
        let holder = self.holders(owner, &key).next();
        if let Some(index) = holder {
            match self.disks[index].store.put_prehashed(owner, key, bytes) {
                Ok(()) => return Ok(index),
                Err(Error::Device(error)) => self.fail(index, error),
                Err(error) => return Err(error),
            }
        }
        let mut candidates: Vec<usize> = self.healthy().collect();
        candidates.sort_by_key(|&index| core::cmp::Reverse(self.disks[index].store.stat().free_bytes));
        let mut outcome = Err(Error::Device(BlockError::Failed));
        for index in candidates {
            match self.disks[index].store.put_prehashed(owner, key, bytes) {
                Ok(()) => return Ok(index),
                Err(Error::Device(error)) => {
                    self.fail(index, error);
                    outcome = Err(Error::Device(error));
                }
                Err(Error::NoSpace) => outcome = Err(Error::NoSpace),
                Err(error) => return Err(error),
            }
        }
        outcome
    }

    /// `owner`'s shard from whichever healthy disk holds a good copy.
    pub fn get(&mut self, owner: &Owner, key: &Key) -> Result<Vec<u8>, Error> {
        let mut outcome = Err(Error::NotFound);
        let holders: Vec<usize> = self.holders(owner, key).collect();
        for index in holders {
            match self.disks[index].store.get(owner, key) {
                Ok(bytes) => return Ok(bytes),
                Err(Error::Device(error)) => {
                    self.fail(index, error);
                    if outcome == Err(Error::NotFound) {
                        outcome = Err(Error::Device(error));
                    }
                }
                Err(error) => outcome = Err(error),
            }
        }
        outcome
    }

    /// Deletes `owner`'s shard from every healthy disk that holds it.
    pub fn delete(&mut self, owner: &Owner, key: &Key) -> Result<(), Error> {
        let holders: Vec<usize> = self.holders(owner, key).collect();
        if holders.is_empty() {
            return Err(Error::NotFound);
        }
        let mut outcome = Ok(());
        for index in holders {
            match self.disks[index].store.delete(owner, key) {
                Ok(()) => {}
                Err(Error::Device(error)) => {
                    self.fail(index, error);
                    outcome = Err(Error::Device(error));
                }
                Err(error) => outcome = Err(error),
            }
        }
        outcome
    }

    /// A storage proof from a healthy disk holding `owner`'s shard.
    pub fn prove(&mut self, owner: &Owner, key: &Key, challenge: u64) -> Result<StorageProof, Error> {
        let mut outcome = Err(Error::NotFound);
        let holders: Vec<usize> = self.holders(owner, key).collect();
        for index in holders {
            match self.disks[index].store.prove(owner, key, challenge) {
                Ok(proof) => return Ok(proof),
                Err(Error::Device(error)) => {
                    self.fail(index, error);
                    outcome = Err(Error::Device(error));
                }
                Err(error) => outcome = Err(error),
            }
        }
        outcome
    }

    /// Whether a healthy disk holds `owner`'s shard `key` (from the indexes).
    pub fn contains(&self, owner: &Owner, key: &Key) -> bool {
        self.holders(owner, key).next().is_some()
    }

    /// Length and Merkle root of `owner`'s shard, from the first healthy disk holding it.
    pub fn info(&self, owner: &Owner, key: &Key) -> Option<ShardInfo> {
        self.healthy().find_map(|index| self.disks[index].store.info(owner, key))
    }

    /// `owner`'s keys on all healthy disks, ascending, without duplicates.
    pub fn list(&self, owner: &Owner) -> Vec<Key> {
        let mut keys: Vec<Key> = self.healthy().flat_map(|index| self.disks[index].store.list(owner)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Up to `max` of `owner`'s shards with keys above `after`, ascending and without
    /// duplicates, over all healthy disks (each disk contributes at most `max`).
    pub fn list_after(&self, owner: &Owner, after: Option<&Key>, max: usize) -> Vec<(Key, ShardInfo)> {
        let mut page: Vec<(Key, ShardInfo)> =
            self.healthy().flat_map(|index| self.disks[index].store.list_after(owner, after, max)).collect();
        page.sort_unstable_by_key(|(key, _)| *key);
        page.dedup_by_key(|(key, _)| *key);
        page.truncate(max);
        page
    }

    /// `owner`'s shards and bytes summed over the healthy disks (a shard on two disks
    /// counts twice, as in [`stat`](Self::stat)).
    pub fn owner_usage(&self, owner: &Owner) -> OwnerUsage {
        self.healthy().map(|index| self.disks[index].store.owner_usage(owner)).fold(
            OwnerUsage::default(),
            |sum, usage| OwnerUsage {
                shards: sum.shards.saturating_add(usage.shards),
                bytes: sum.bytes.saturating_add(usage.bytes),
            },
        )
    }

    /// Distinct owners holding a live shard on a healthy disk.
    pub fn owner_count(&self) -> usize {
        let mut healthy = self.healthy();
        match (healthy.next(), healthy.next()) {
            (None, _) => 0,
            (Some(only), None) => self.disks[only].store.owner_count(),
            _ => {
                let owners: BTreeSet<&Owner> =
                    self.healthy().flat_map(|index| self.disks[index].store.owners()).collect();
                owners.len()
            }
        }
    }

    /// Sum of the healthy disks' figures (a shard on two disks counts twice).
    pub fn stat(&self) -> Stat {
        self.healthy().map(|index| self.disks[index].store.stat()).fold(Stat::default(), |sum, stat| Stat {
            capacity_bytes: sum.capacity_bytes.saturating_add(stat.capacity_bytes),
            used_bytes: sum.used_bytes.saturating_add(stat.used_bytes),
            free_bytes: sum.free_bytes.saturating_add(stat.free_bytes),
            live_bytes: sum.live_bytes.saturating_add(stat.live_bytes),
            shard_count: sum.shard_count.saturating_add(stat.shard_count),
        })
    }

    /// Number of disks, failed ones included.
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// Indices of the disks marked failed.
    pub fn failed_disks(&self) -> Vec<usize> {
        (0..self.disks.len()).filter(|&index| self.disks[index].failed).collect()
    }

    /// The store of disk `index`.
    pub fn store(&self, index: usize) -> Option<&ShardStore<D>> {
        self.disks.get(index).map(|disk| &disk.store)
    }

    /// The store of disk `index`, mutably (e.g. to inject faults into its device).
    pub fn store_mut(&mut self, index: usize) -> Option<&mut ShardStore<D>> {
        self.disks.get_mut(index).map(|disk| &mut disk.store)
    }

    /// Hands the stores back, failed ones included.
    pub fn into_stores(self) -> Vec<ShardStore<D>> {
        self.disks.into_iter().map(|disk| disk.store).collect()
    }

    fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.disks.len()).filter(|&index| !self.disks[index].failed)
    }

    fn holders<'a>(&'a self, owner: &'a Owner, key: &'a Key) -> impl Iterator<Item = usize> + 'a {
        self.healthy().filter(move |&index| self.disks[index].store.contains(owner, key))
    }

    fn fail(&mut self, index: usize, _error: BlockError) {
        self.disks[index].failed = true;
    }
}
