//! The process table: rebuilt from `/proc` at start, then kept by lifecycle events. It
//! answers the ancestry fields (`proc.pname`, `proc.pcmdline`, `proc.aname[N]`,
//! `proc.aexepath[N]`) and the fields a syscall record does not carry (exe path, argv).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::events::{Header, KernelEvent};

/// How long an exited process stays in the table, so that its children's and its own late
/// events still find it.
const EXITED_GRACE: usize = 4096;
/// Ancestors reported (`proc.aname[1..=MAX_ANCESTORS]`).
pub const MAX_ANCESTORS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    /// comm, as the kernel reports it (at most 15 bytes).
    pub name: String,
    /// argv[0].
    pub exe: String,
    pub exepath: String,
    /// argv[1..].
    pub args: Vec<String>,
    pub tty: u32,
    pub uid: u32,
    pub loginuid: u32,
    pub cgroup_id: u64,
    pub start_boot_ns: u64,
}

impl ProcEntry {
    /// `name arg1 arg2 ...`, as Falco's `proc.cmdline`.
    pub fn cmdline(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// The ancestry of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ancestry {
    pub names: Vec<String>,
    pub exepaths: Vec<String>,
    pub pids: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, ProcEntry>,
    exited: VecDeque<u32>,
}

impl ProcTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every process under `proc_root` (normally `/proc`); `cgroup_root` is the cgroup2
    /// mount used to turn `/proc/PID/cgroup` paths into cgroup ids.
    pub fn from_proc(proc_root: &Path, cgroup_root: &Path) -> std::io::Result<Self> {
        let mut t = Self::new();
        for entry in std::fs::read_dir(proc_root)?.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // a process may exit while we read it: skip what vanished
            if let Some(p) = read_proc(&entry.path(), pid, cgroup_root) {
                t.procs.insert(pid, p);
            }
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.procs.get(&pid)
    }

    pub fn insert(&mut self, p: ProcEntry) {
        self.procs.insert(p.pid, p);
    }

    /// Applies a lifecycle event (others are ignored).
    pub fn apply(&mut self, ev: &KernelEvent) {
        match ev {
            KernelEvent::Fork {
                hdr,
                child_pid,
                start_boot_ns,
            } => {
                let mut child = self
                    .procs
                    .get(&hdr.pid)
                    .cloned()
                    .unwrap_or_else(|| from_header(hdr));
                child.pid = *child_pid;
                child.ppid = hdr.pid;
                child.start_boot_ns = *start_boot_ns;
                child.cgroup_id = hdr.cgroup_id;
                self.procs.insert(*child_pid, child);
            }
            KernelEvent::Exec {
                hdr,
                start_boot_ns,
                filename,
                argv,
                ..
            } => {
                let e = self
                    .procs
                    .entry(hdr.pid)
                    .or_insert_with(|| from_header(hdr));
                e.pid = hdr.pid;
                e.ppid = hdr.ppid;
                e.name = hdr.comm.clone();
                e.exe = argv.first().cloned().unwrap_or_default();
                e.exepath = absolute_exepath(hdr.pid, filename);
                e.args = argv.iter().skip(1).cloned().collect();
                e.tty = hdr.tty;
                e.uid = hdr.uid;
                e.loginuid = hdr.loginuid;
                e.cgroup_id = hdr.cgroup_id;
                e.start_boot_ns = *start_boot_ns;
            }
            KernelEvent::Exit { hdr, .. } => {
                self.exited.push_back(hdr.pid);
                while self.exited.len() > EXITED_GRACE {
                    if let Some(old) = self.exited.pop_front() {
                        // a pid reused since its exit belongs to a live process now
                        if !self.exited.contains(&old) {
                            self.procs.remove(&old);
                        }
                    }
                }
            }
            KernelEvent::Syscall { hdr, .. } | KernelEvent::NetDenied { hdr, .. } => {
                // learn processes that started before the table was read and were missed
                self.procs
                    .entry(hdr.pid)
                    .or_insert_with(|| from_header(hdr));
            }
        }
    }

    /// Ancestors of `pid`, parent first, up to [`MAX_ANCESTORS`].
    pub fn ancestry(&self, pid: u32) -> Ancestry {
        let mut a = Ancestry::default();
        let mut cur = self.procs.get(&pid).map(|p| p.ppid);
        while let Some(ppid) = cur {
            if ppid == 0 || a.pids.len() >= MAX_ANCESTORS || a.pids.contains(&ppid) {
                break;
            }
            match self.procs.get(&ppid) {
                Some(p) => {
                    a.names.push(p.name.clone());
                    a.exepaths.push(p.exepath.clone());
                    a.pids.push(ppid);
                    cur = Some(p.ppid);
                }
                None => break,
            }
        }
        a
    }
}

fn from_header(hdr: &Header) -> ProcEntry {
    ProcEntry {
        pid: hdr.pid,
        ppid: hdr.ppid,
        name: hdr.comm.clone(),
        tty: hdr.tty,
        uid: hdr.uid,
        loginuid: hdr.loginuid,
        cgroup_id: hdr.cgroup_id,
        ..ProcEntry::default()
    }
}

/// The kernel reports the path as passed to execve; a relative one is resolved through
/// `/proc/PID/exe` while the process lives.
fn absolute_exepath(pid: u32, filename: &str) -> String {
    if filename.starts_with('/') {
        return filename.to_string();
    }
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| filename.to_string())
}

fn read_proc(dir: &Path, pid: u32, cgroup_root: &Path) -> Option<ProcEntry> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'
    let close = stat.rfind(')')?;
    let open = stat.find('(')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[4] = tty_nr (7), rest[19] = starttime (22)
    let ppid = rest.get(1)?.parse().ok()?;
    let tty = rest.get(4).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let ticks: u64 = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv = crate::events::split_argv(&cmdline);
    let exepath = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let loginuid = std::fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX);
    let cgroup_id = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| p.trim_start_matches('/').to_string())
        })
        .and_then(|rel| crate::cgroups::inode_of(&cgroup_root.join(rel)))
        .unwrap_or(0);
    Some(ProcEntry {
        pid,
        ppid,
        name,
        exe: argv.first().cloned().unwrap_or_default(),
        exepath,
        args: argv.iter().skip(1).cloned().collect(),
        tty: u32::try_from(tty).unwrap_or(0),
        uid,
        loginuid,
        cgroup_id,
        start_boot_ns: ticks.saturating_mul(1_000_000_000 / hz),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: u32, ppid: u32, comm: &str) -> Header {
        Header {
            flags: 0,
            ts_boot_ns: 0,
            cgroup_id: 9,
            session: 0,
            pid,
            tid: pid,
            ppid,
            uid: 0,
            gid: 0,
            loginuid: u32::MAX,
            tty: 0,
            comm: comm.into(),
        }
    }

    #[test]
    fn lifecycle_builds_ancestry() {
        let mut t = ProcTable::new();
        t.insert(ProcEntry {
            pid: 1,
            ppid: 0,
            name: "init".into(),
            exepath: "/sbin/init".into(),
            ..Default::default()
        });
        t.insert(ProcEntry {
            pid: 100,
            ppid: 1,
            name: "runc".into(),
            exepath: "/usr/sbin/runc".into(),
            ..Default::default()
        });
        t.apply(&KernelEvent::Fork {
            hdr: hdr(100, 1, "runc"),
            child_pid: 200,
            start_boot_ns: 5,
        });
        t.apply(&KernelEvent::Exec {
            hdr: hdr(200, 100, "sh"),
            start_boot_ns: 5,
            filename: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "id".into()],
            args_truncated: false,
            killed: false,
            kill_failed: false,
            deny_rule: 0,
        });
        t.apply(&KernelEvent::Fork {
            hdr: hdr(200, 100, "sh"),
            child_pid: 201,
            start_boot_ns: 6,
        });
        let child = t.get(201).unwrap();
        assert_eq!(child.ppid, 200);
        assert_eq!(
            child.name, "sh",
            "a forked child is its parent's image until it execs"
        );
        let a = t.ancestry(201);
        assert_eq!(a.names, vec!["sh", "runc", "init"]);
        assert_eq!(a.exepaths, vec!["/bin/sh", "/usr/sbin/runc", "/sbin/init"]);
        assert_eq!(t.get(200).unwrap().cmdline(), "sh -c id");
    }

    #[test]
    fn ancestry_stops_at_cycles_and_unknown_parents() {
        let mut t = ProcTable::new();
        t.insert(ProcEntry {
            pid: 5,
            ppid: 6,
            name: "a".into(),
            ..Default::default()
        });
        t.insert(ProcEntry {
            pid: 6,
            ppid: 5,
            name: "b".into(),
            ..Default::default()
        });
        assert_eq!(t.ancestry(5).names, vec!["b", "a"]);
        assert!(t.ancestry(77).names.is_empty());
    }

    #[test]
    fn reads_this_process_from_proc() {
        let t = ProcTable::from_proc(Path::new("/proc"), Path::new("/nonexistent")).unwrap();
        let me = t.get(std::process::id()).unwrap();
        assert!(!me.exepath.is_empty());
        assert!(t.len() > 1);
    }
}
