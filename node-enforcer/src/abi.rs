//! The Rust mirror of `bpf/tether.h`: every struct the kernel programs and the loader share.
//!
//! Layouts are `#[repr(C)]` with the same explicit padding as the header; the test at the
//! bottom checks every size and offset against the header's layout, so a change on one side
//! without the other fails the build's tests.

#![allow(clippy::struct_field_names)]

pub const COMM_LEN: usize = 16;
pub const PATH_LEN: usize = 256;
pub const ARGS_LEN: usize = 512;
pub const ADDR_LEN: usize = 28;

pub const EV_EXEC: u32 = 1;
pub const EV_FORK: u32 = 2;
pub const EV_EXIT: u32 = 3;
pub const EV_SYSCALL: u32 = 4;
pub const EV_NET_DENIED: u32 = 5;

pub const F_KILLED: u32 = 1;
pub const F_WATCHED: u32 = 2;
pub const F_ARGS_TRUNC: u32 = 4;
pub const F_KILL_FAILED: u32 = 8;

pub const C_EMITTED: u32 = 0;
pub const C_LOST: u32 = 1;
pub const C_FILTERED: u32 = 2;
pub const C_EXEC_KILLED: u32 = 3;
pub const C_NET_DENIED: u32 = 4;
pub const C_PENDING_FULL: u32 = 5;
pub const C_COUNT: u32 = 8;

pub const DENY_KILL: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Hdr {
    pub kind: u32,
    pub flags: u32,
    pub ts_boot_ns: u64,
    pub cgroup_id: u64,
    pub session: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub loginuid: u32,
    pub tty: u32,
    pub _pad0: u32,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Exec {
    pub hdr: Hdr,
    pub start_boot_ns: u64,
    pub filename_len: u32,
    pub args_len: u32,
    pub deny_rule: u32,
    pub _pad0: u32,
    pub filename: [u8; PATH_LEN],
    pub args: [u8; ARGS_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Fork {
    pub hdr: Hdr,
    pub child_pid: u32,
    pub _pad0: u32,
    pub start_boot_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub hdr: Hdr,
    pub exit_code: i32,
    pub _pad0: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    pub hdr: Hdr,
    pub res: i64,
    pub nr: u32,
    pub path_len: u32,
    pub path2_len: u32,
    pub addr_len: u32,
    pub args: [u64; 6],
    pub path: [u8; PATH_LEN],
    pub path2: [u8; PATH_LEN],
    pub addr: [u8; ADDR_LEN],
    pub _pad0: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetDenied {
    pub hdr: Hdr,
    pub family: u32,
    pub port: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub all_cgroups: u32,
    pub self_tgid: u32,
    pub wakeup_bytes: u64,
    pub write_filter: u32,
    /// Entries of `read_head` in use; [`READ_HEADS_OFF`]: every read-only open is looked
    /// up in `sensitive_paths`.
    pub read_heads: u32,
    /// The first 8 bytes of each sensitive prefix (native byte order).
    pub read_head: [u64; READ_HEADS],
}

/// `TETHER_READ_HEADS`: room for the first 8 bytes of this many sensitive prefixes.
pub const READ_HEADS: usize = 16;
/// `TETHER_READ_HEADS_OFF`.
pub const READ_HEADS_OFF: u32 = u32::MAX;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DenyKey {
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyVal {
    pub rule_id: u32,
    pub action: u32,
}

/// The data part of `struct tether_path_key` (aya's `lpm_trie::Key` adds the prefix length).
pub type PathKeyData = [u8; 64];

// SAFETY: plain-old-data structs of integers and byte arrays, `#[repr(C)]`, with every
// padding byte spelled out as a field, so any bit pattern is a valid value.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for DenyKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DenyVal {}

impl DenyKey {
    /// A key for `comm` (the executable's base name, truncated to 15 bytes as the kernel
    /// truncates the task comm). `cgroup_id` 0 matches every watched cgroup.
    pub fn new(cgroup_id: u64, name: &str) -> Self {
        let mut comm = [0u8; COMM_LEN];
        for (dst, src) in comm.iter_mut().zip(name.bytes().take(COMM_LEN - 1)) {
            *dst = src;
        }
        Self { cgroup_id, comm }
    }
}

/// A record type the ring buffer carries; `decode` reads one from raw bytes.
pub trait Record: Copy {
    /// Reads the record from the front of `bytes`, or `None` if they are too short.
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked above; the types are plain-old-data `#[repr(C)]`
        // structs of integers and byte arrays, valid for any bit pattern;
        // `read_unaligned` makes no alignment assumption about the ring buffer slot.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

impl Record for Hdr {}
impl Record for Exec {}
impl Record for Fork {}
impl Record for Exit {}
impl Record for Syscall {}
impl Record for NetDenied {}

/// The bytes before the first NUL of a fixed buffer, bounded by `len` when given.
pub fn cstr(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.get(..end).unwrap_or(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets as `bpf/tether.h` lays them out on x86_64 (the compiled check
    /// below reads them from the header itself).
    #[test]
    fn layout_matches_header() {
        assert_eq!(size_of::<Hdr>(), 80);
        assert_eq!(offset_of!(Hdr, ts_boot_ns), 8);
        assert_eq!(offset_of!(Hdr, session), 24);
        assert_eq!(offset_of!(Hdr, pid), 32);
        assert_eq!(offset_of!(Hdr, tty), 56);
        assert_eq!(offset_of!(Hdr, comm), 64);
        assert_eq!(offset_of!(Exec, filename), 104);
        assert_eq!(size_of::<Exec>(), 104 + PATH_LEN + ARGS_LEN);
        assert_eq!(size_of::<Fork>(), 96);
        assert_eq!(size_of::<Exit>(), 88);
        assert_eq!(offset_of!(Syscall, args), 104);
        assert_eq!(offset_of!(Syscall, addr), 152 + 2 * PATH_LEN);
        assert_eq!(size_of::<Syscall>(), 696);
        assert_eq!(size_of::<NetDenied>(), 104);
        assert_eq!(size_of::<Config>(), 24 + 8 * READ_HEADS);
        assert_eq!(size_of::<DenyKey>(), 24);
        assert_eq!(size_of::<DenyVal>(), 8);
    }

    /// Compiles a probe with the host C compiler against the real `bpf/tether.h` and
    /// compares every size and offset it prints with the Rust layout.
    #[test]
    fn header_layout_matches_rust() {
        let dir = tempfile_dir();
        let src = dir.join("layout.c");
        let bin = dir.join("layout");
        let mut c = String::from(
            "#include <linux/types.h>\n#include <stdio.h>\n#include <stddef.h>\n#include \"tether.h\"\n#define S(t) printf(#t \" %zu\\n\", sizeof(struct t));\n#define O(t, m) printf(#t \".\" #m \" %zu\\n\", offsetof(struct t, m));\nint main(void) {\n",
        );
        let checks: Vec<(&str, usize)> = vec![
            ("tether_hdr", size_of::<Hdr>()),
            ("tether_exec", size_of::<Exec>()),
            ("tether_fork", size_of::<Fork>()),
            ("tether_exit", size_of::<Exit>()),
            ("tether_syscall", size_of::<Syscall>()),
            ("tether_net_denied", size_of::<NetDenied>()),
            ("tether_config", size_of::<Config>()),
            ("tether_deny_key", size_of::<DenyKey>()),
            ("tether_deny_val", size_of::<DenyVal>()),
            ("tether_path_key", 4 + size_of::<PathKeyData>()),
        ];
        let offsets: Vec<(&str, &str, usize)> = vec![
            ("tether_hdr", "ts_boot_ns", offset_of!(Hdr, ts_boot_ns)),
            ("tether_hdr", "cgroup_id", offset_of!(Hdr, cgroup_id)),
            ("tether_hdr", "session", offset_of!(Hdr, session)),
            ("tether_hdr", "pid", offset_of!(Hdr, pid)),
            ("tether_hdr", "loginuid", offset_of!(Hdr, loginuid)),
            ("tether_hdr", "tty", offset_of!(Hdr, tty)),
            ("tether_hdr", "comm", offset_of!(Hdr, comm)),
            (
                "tether_exec",
                "start_boot_ns",
                offset_of!(Exec, start_boot_ns),
            ),
            ("tether_exec", "deny_rule", offset_of!(Exec, deny_rule)),
            ("tether_exec", "filename", offset_of!(Exec, filename)),
            ("tether_exec", "args", offset_of!(Exec, args)),
            ("tether_fork", "child_pid", offset_of!(Fork, child_pid)),
            (
                "tether_fork",
                "start_boot_ns",
                offset_of!(Fork, start_boot_ns),
            ),
            ("tether_exit", "exit_code", offset_of!(Exit, exit_code)),
            ("tether_syscall", "res", offset_of!(Syscall, res)),
            ("tether_syscall", "nr", offset_of!(Syscall, nr)),
            ("tether_syscall", "addr_len", offset_of!(Syscall, addr_len)),
            ("tether_syscall", "args", offset_of!(Syscall, args)),
            ("tether_syscall", "path", offset_of!(Syscall, path)),
            ("tether_syscall", "path2", offset_of!(Syscall, path2)),
            ("tether_syscall", "addr", offset_of!(Syscall, addr)),
            ("tether_net_denied", "family", offset_of!(NetDenied, family)),
            ("tether_net_denied", "port", offset_of!(NetDenied, port)),
            ("tether_net_denied", "addr", offset_of!(NetDenied, addr)),
            ("tether_config", "self_tgid", offset_of!(Config, self_tgid)),
            (
                "tether_config",
                "wakeup_bytes",
                offset_of!(Config, wakeup_bytes),
            ),
            (
                "tether_config",
                "write_filter",
                offset_of!(Config, write_filter),
            ),
            (
                "tether_config",
                "read_heads",
                offset_of!(Config, read_heads),
            ),
            ("tether_config", "read_head", offset_of!(Config, read_head)),
            ("tether_deny_key", "comm", offset_of!(DenyKey, comm)),
            ("tether_deny_val", "action", offset_of!(DenyVal, action)),
        ];
        let mut expected = String::new();
        for (t, n) in &checks {
            c.push_str(&format!("S({t})\n"));
            expected.push_str(&format!("{t} {n}\n"));
        }
        for (t, m, n) in &offsets {
            c.push_str(&format!("O({t}, {m})\n"));
            expected.push_str(&format!("{t}.{m} {n}\n"));
        }
        c.push_str("return 0; }\n");
        std::fs::write(&src, c).unwrap();
        let include = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf");
        let cc = std::process::Command::new("cc")
            .arg("-I")
            .arg(include)
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .output()
            .unwrap_or_else(|e| panic!("cannot run cc ({e}): install the Debian package `gcc`"));
        assert!(
            cc.status.success(),
            "{}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = std::process::Command::new(&bin).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tether-abi-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
