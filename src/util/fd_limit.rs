//! The open-file limit (`RLIMIT_NOFILE`): every connection, the store's file and every outgoing
//! connection is a file descriptor, and the usual soft limit (1024) is far below what the hard
//! limit allows. `serve` raises the soft limit to the hard one at start and sizes its
//! connection cap from the result.

/// What the soft limit is raised to when the hard limit is unlimited: Linux refuses
/// `RLIM_INFINITY` for open files (the ceiling is `fs.nr_open`, 1048576 by default).
pub const UNLIMITED_TARGET: u64 = 1 << 20;

/// The limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now: what the process may open.
    pub soft: u64,
    /// The hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

fn get() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

fn as_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// The current soft limit (what this process may open), without changing it.
pub fn soft() -> std::io::Result<u64> {
    get().map(|l| as_u64(l.rlim_cur))
}

/// Raises the soft limit to the hard limit (or to [`UNLIMITED_TARGET`] when the hard limit is
/// unlimited). A soft limit already there is left as it is.
pub fn raise() -> std::io::Result<FdLimit> {
    let mut lim = get()?;
    let before = as_u64(lim.rlim_cur);
    let hard = as_u64(lim.rlim_max);
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        UNLIMITED_TARGET
    } else {
        hard
    };
    if before >= target {
        return Ok(FdLimit {
            before,
            soft: before,
            hard,
        });
    }
    lim.rlim_cur = target;
    // SAFETY: setrlimit reads one rlimit we own; it only changes this process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FdLimit {
        before,
        soft: target,
        hard,
    })
}
