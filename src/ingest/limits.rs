//! What one client may hold of the server: the connection caps (in total, and per client
//! address) and the timeouts for slow headers and slow bodies. [`ServerLimits`] is derived from
//! the open-file limit at start; tests pass their own.
//!
//! Every connection is a file descriptor, and a client that sends half a request holds its
//! descriptor until a timeout. Without caps one client could take every descriptor the process
//! has, and the store, outgoing mail and Okta connections and real deliveries would fail with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Descriptors kept back from connections: the store's file, the listener, script and stdlib
/// reads, the reload watcher, pooled SMTP and Okta connections, log output and the runtime's own.
pub const FD_RESERVE: u64 = 256;
/// The most connections at once, whatever the open-file limit: Okta delivers with little
/// concurrency (and a reverse proxy keeps few upstream connections), and each connection may
/// buffer a request's headers (hyper: up to ~400 KiB), so this also bounds memory.
pub const MAX_CONNECTIONS: usize = 1024;
/// The fewest connections the cap derived from a tiny open-file limit allows.
pub const MIN_CONNECTIONS: usize = 16;
/// The most connections one client address may hold at once: far more than Okta (or a proxy)
/// uses, far fewer than the total, so one client cannot take all of them. Its excess
/// connections are closed at once, unread.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// One address may hold at most this fraction (1/n) of the total cap, when the cap is small.
pub const PER_ADDRESS_SHARE: usize = 4;
/// A client that sends its headers slower than this is dropped (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An authenticated client must send the whole body within this, from the end of its headers
/// (a 1 MiB body in 10 s is 100 KiB/s): a body shorter than its `Content-Length` would
/// otherwise hold the connection forever. It gets a 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The open-file limit assumed when it cannot be read: the usual soft default.
pub const DEFAULT_FD_LIMIT: u64 = 1024;

/// The server's limits on connections and slow clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; the accept loop waits for a free one before accepting.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold; more are closed at once.
    pub max_connections_per_address: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

impl ServerLimits {
    /// The limits for a process that may open `fd_limit` files: the limit less
    /// [`FD_RESERVE`], at most [`MAX_CONNECTIONS`]; per address at most
    /// [`MAX_CONNECTIONS_PER_ADDRESS`] and a [`PER_ADDRESS_SHARE`] of that.
    pub fn for_fd_limit(fd_limit: u64) -> ServerLimits {
        let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let max_connections = room.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
        ServerLimits {
            max_connections,
            max_connections_per_address: (max_connections / PER_ADDRESS_SHARE)
                .clamp(1, MAX_CONNECTIONS_PER_ADDRESS),
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
        }
    }
}

impl Default for ServerLimits {
    /// From this process's current open-file limit (not raised: `serve` raises it first).
    fn default() -> Self {
        ServerLimits::for_fd_limit(crate::util::fd_limit::soft().unwrap_or(DEFAULT_FD_LIMIT))
    }
}

/// The address connections are counted by: an IPv4 address, or an IPv6 /64 (one host or
/// subscriber usually has a whole /64, and could otherwise take a new address per connection).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Connections held per client address.
pub(crate) struct PerAddress {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when dropped.
pub(crate) struct AddressSlot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when that address holds its maximum.
    pub(crate) fn claim(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_open_file_limit() {
        let at = |n| {
            let l = ServerLimits::for_fd_limit(n);
            (l.max_connections, l.max_connections_per_address)
        };
        assert_eq!(at(1024), (768, 128));
        assert_eq!(at(4096), (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS));
        assert_eq!(at(u64::MAX), (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS));
        assert_eq!(at(300), (44, 11));
        assert_eq!(at(0), (MIN_CONNECTIONS, 4));
    }

    #[test]
    fn addresses_are_counted_apart_and_slots_come_back() {
        let p = PerAddress::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let s1 = p.claim(a).unwrap();
        let _s2 = p.claim(a).unwrap();
        assert!(p.claim(a).is_none());
        assert!(p.claim(b).is_some(), "another address is not affected");
        drop(s1);
        let _s3 = p.claim(a).expect("a slot given back is free again");
        // An IPv4-mapped IPv6 peer is the IPv4 address; one /64 is one address.
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert!(p.claim(mapped).is_none());
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _x = p.claim(x).unwrap();
        let _y = p.claim(y).unwrap();
        assert!(p.claim("2001:db8:1:2::77".parse().unwrap()).is_none());
        assert!(p.claim("2001:db8:1:3::1".parse().unwrap()).is_some());
        drop((_x, _y));
        assert_eq!(p.held(x), 0);
        assert!(
            p.held.lock().unwrap().len() <= 3,
            "empty entries are removed"
        );
    }
}
