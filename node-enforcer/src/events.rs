//! Decoding of ring-buffer records into typed kernel events.

use crate::abi::{self, Record};

/// Fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub flags: u32,
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub ts_boot_ns: u64,
    pub cgroup_id: u64,
    pub session: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `u32::MAX` when unset.
    pub loginuid: u32,
    pub tty: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Exec {
        hdr: Header,
        start_boot_ns: u64,
        filename: String,
        argv: Vec<String>,
        args_truncated: bool,
        killed: bool,
        kill_failed: bool,
        deny_rule: u32,
    },
    Fork {
        hdr: Header,
        child_pid: u32,
        start_boot_ns: u64,
    },
    Exit {
        hdr: Header,
        exit_code: i32,
    },
    Syscall {
        hdr: Header,
        nr: u32,
        res: i64,
        args: [u64; 6],
        path: String,
        path2: String,
        addr: Vec<u8>,
    },
    NetDenied {
        hdr: Header,
        family: u32,
        port: u16,
        addr: [u8; 16],
    },
}

impl KernelEvent {
    pub fn header(&self) -> &Header {
        match self {
            KernelEvent::Exec { hdr, .. }
            | KernelEvent::Fork { hdr, .. }
            | KernelEvent::Exit { hdr, .. }
            | KernelEvent::Syscall { hdr, .. }
            | KernelEvent::NetDenied { hdr, .. } => hdr,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        len: usize,
        need: usize,
        what: &'static str,
    },
    #[error("record of unknown kind {0}")]
    UnknownKind(u32),
}

fn text(buf: &[u8], len: u32) -> String {
    let bounded = buf.get(..len as usize).unwrap_or(buf);
    String::from_utf8_lossy(abi::cstr(bounded)).into_owned()
}

fn header(h: &abi::Hdr) -> Header {
    Header {
        flags: h.flags,
        ts_boot_ns: h.ts_boot_ns,
        cgroup_id: h.cgroup_id,
        session: h.session,
        pid: h.pid,
        tid: h.tid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        loginuid: h.loginuid,
        tty: h.tty,
        comm: String::from_utf8_lossy(abi::cstr(&h.comm)).into_owned(),
    }
}

fn need<T: Record>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    T::decode(bytes).ok_or(DecodeError::Short {
        len: bytes.len(),
        need: std::mem::size_of::<T>(),
        what,
    })
}

/// Splits NUL-separated argv bytes.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    let trimmed = match bytes.iter().rposition(|&b| b != 0) {
        Some(last) => bytes.get(..=last).unwrap_or(bytes),
        None => return Vec::new(),
    };
    trimmed
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let h: abi::Hdr = need(bytes, "header")?;
    match h.kind {
        abi::EV_EXEC => {
            let e: abi::Exec = need(bytes, "exec record")?;
            let args_len = (e.args_len as usize).min(abi::ARGS_LEN);
            Ok(KernelEvent::Exec {
                hdr: header(&e.hdr),
                start_boot_ns: e.start_boot_ns,
                filename: text(&e.filename, e.filename_len),
                argv: split_argv(e.args.get(..args_len).unwrap_or(&[])),
                args_truncated: e.hdr.flags & abi::F_ARGS_TRUNC != 0,
                killed: e.hdr.flags & abi::F_KILLED != 0,
                kill_failed: e.hdr.flags & abi::F_KILL_FAILED != 0,
                deny_rule: e.deny_rule,
            })
        }
        abi::EV_FORK => {
            let e: abi::Fork = need(bytes, "fork record")?;
            Ok(KernelEvent::Fork {
                hdr: header(&e.hdr),
                child_pid: e.child_pid,
                start_boot_ns: e.start_boot_ns,
            })
        }
        abi::EV_EXIT => {
            let e: abi::Exit = need(bytes, "exit record")?;
            Ok(KernelEvent::Exit {
                hdr: header(&e.hdr),
                exit_code: e.exit_code,
            })
        }
        abi::EV_SYSCALL => {
            let e: abi::Syscall = need(bytes, "syscall record")?;
            let alen = (e.addr_len as usize).min(abi::ADDR_LEN);
            Ok(KernelEvent::Syscall {
                hdr: header(&e.hdr),
                nr: e.nr,
                res: e.res,
                args: e.args,
                path: text(&e.path, e.path_len),
                path2: text(&e.path2, e.path2_len),
                addr: e.addr.get(..alen).unwrap_or(&[]).to_vec(),
            })
        }
        abi::EV_NET_DENIED => {
            let e: abi::NetDenied = need(bytes, "net-denied record")?;
            Ok(KernelEvent::NetDenied {
                hdr: header(&e.hdr),
                family: e.family,
                port: u16::try_from(e.port).unwrap_or(0),
                addr: e.addr,
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-old-data struct as bytes.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn hdr(kind: u32) -> abi::Hdr {
        let mut comm = [0u8; 16];
        comm[..2].copy_from_slice(b"sh");
        abi::Hdr {
            kind,
            flags: abi::F_KILLED,
            ts_boot_ns: 5,
            cgroup_id: 77,
            session: 0,
            pid: 10,
            tid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            loginuid: u32::MAX,
            tty: 0,
            _pad0: 0,
            comm,
        }
    }

    #[test]
    fn decodes_exec_with_argv() {
        let mut e = abi::Exec {
            hdr: hdr(abi::EV_EXEC),
            start_boot_ns: 1,
            filename_len: 7,
            args_len: 12,
            deny_rule: 3,
            _pad0: 0,
            filename: [0; abi::PATH_LEN],
            args: [0; abi::ARGS_LEN],
        };
        e.filename[..7].copy_from_slice(b"/bin/sh");
        e.args[..12].copy_from_slice(b"sh\0-c\0id -u\0");
        match decode(&bytes_of(&e)).unwrap() {
            KernelEvent::Exec {
                hdr,
                filename,
                argv,
                killed,
                deny_rule,
                ..
            } => {
                assert_eq!(hdr.comm, "sh");
                assert_eq!(hdr.cgroup_id, 77);
                assert_eq!(filename, "/bin/sh");
                assert_eq!(argv, vec!["sh", "-c", "id -u"]);
                assert!(killed);
                assert_eq!(deny_rule, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let h = hdr(abi::EV_EXEC);
        let b = bytes_of(&h);
        assert_eq!(
            decode(&b),
            Err(DecodeError::Short {
                len: 80,
                need: std::mem::size_of::<abi::Exec>(),
                what: "exec record"
            })
        );
        assert!(matches!(
            decode(&b[..10]),
            Err(DecodeError::Short { what: "header", .. })
        ));
        let h = hdr(99);
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn argv_split_handles_empty_and_trailing_nuls() {
        assert!(split_argv(b"").is_empty());
        assert!(split_argv(b"\0\0").is_empty());
        assert_eq!(split_argv(b"a\0\0b\0"), vec!["a", "", "b"]);
    }
}
