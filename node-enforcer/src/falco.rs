//! Kernel records -> Falco's syscall fields (`policies::SyscallEvent`).
//!
//! Event types produced (`evt.type`): `execve` (every exec, from `sched_process_exec`),
//! `open`, `openat`, `openat2` (write intent, or a read of a sensitive path prefix),
//! `connect`, `bind`, `accept`, `accept4`, `listen`, `sendto` (IPv4/IPv6 only), `socket`
//! (`AF_PACKET` or raw), `ptrace` (attach, seize, traceme, peek/poke), `setns`, `unshare`,
//! `mount`, `init_module`, `finit_module`, `bpf`, `chmod`, `fchmod`, `fchmodat`,
//! `fchmodat2` (setuid/setgid bits), `memfd_create`, `execveat`, `symlink`, `symlinkat`,
//! `link`, `linkat`, `dup2`, `dup3` (onto stdin/stdout/stderr). A connect refused by
//! isolation is reported as `connect` with `evt.res` `EPERM` and `evt.arg.denied=isolate`.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use policies::{ContainerInfo, FdInfo, K8sInfo, ProcInfo, SyscallEvent, UserInfo};

use crate::cgroups::{CgroupResolver, ContainerRef};
use crate::events::{Header, KernelEvent};
use crate::pods::PodCache;
use crate::proctable::ProcTable;

/// Name of an x86_64 syscall number among those the kernel side reports.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    Some(match nr {
        2 => "open",
        33 => "dup2",
        41 => "socket",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        49 => "bind",
        50 => "listen",
        86 => "link",
        88 => "symlink",
        90 => "chmod",
        91 => "fchmod",
        101 => "ptrace",
        165 => "mount",
        175 => "init_module",
        257 => "openat",
        265 => "linkat",
        266 => "symlinkat",
        268 => "fchmodat",
        272 => "unshare",
        288 => "accept4",
        292 => "dup3",
        308 => "setns",
        313 => "finit_module",
        319 => "memfd_create",
        321 => "bpf",
        322 => "execveat",
        437 => "openat2",
        452 => "fchmodat2",
        _ => return None,
    })
}

/// Open flags as Falco renders them (`O_RDONLY`, `O_WRONLY|O_CREAT|O_TRUNC`, ...).
pub fn open_flags(flags: u64) -> String {
    let mut parts = vec![match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }];
    for (bit, name) in [
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o200000, "O_DIRECTORY"),
        (0o2000000, "O_CLOEXEC"),
        (0o20200000, "O_TMPFILE"),
    ] {
        if flags & bit == bit {
            parts.push(name);
        }
    }
    parts.join("|")
}

fn ptrace_request(r: u64) -> String {
    match r {
        0 => "PTRACE_TRACEME".into(),
        1 => "PTRACE_PEEKTEXT".into(),
        2 => "PTRACE_PEEKDATA".into(),
        3 => "PTRACE_PEEKUSR".into(),
        4 => "PTRACE_POKETEXT".into(),
        5 => "PTRACE_POKEDATA".into(),
        6 => "PTRACE_POKEUSR".into(),
        16 => "PTRACE_ATTACH".into(),
        0x4206 => "PTRACE_SEIZE".into(),
        other => other.to_string(),
    }
}

fn clone_flags(f: u64) -> String {
    let names: Vec<&str> = [
        (0x0002_0000, "CLONE_NEWNS"),
        (0x0200_0000, "CLONE_NEWCGROUP"),
        (0x0400_0000, "CLONE_NEWUTS"),
        (0x0800_0000, "CLONE_NEWIPC"),
        (0x1000_0000, "CLONE_NEWUSER"),
        (0x2000_0000, "CLONE_NEWPID"),
        (0x4000_0000, "CLONE_NEWNET"),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        f.to_string()
    } else {
        names.join("|")
    }
}

fn socket_domain(d: u64) -> String {
    match d {
        1 => "AF_UNIX".into(),
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        other => other.to_string(),
    }
}

/// A `struct sockaddr_in`/`sockaddr_in6` as (typechar, ip, port).
pub fn parse_sockaddr(addr: &[u8]) -> Option<(&'static str, String, u16)> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]);
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        2 => {
            let ip = Ipv4Addr::new(*addr.get(4)?, *addr.get(5)?, *addr.get(6)?, *addr.get(7)?);
            Some(("4", ip.to_string(), port))
        }
        10 => {
            let bytes: [u8; 16] = addr.get(8..24)?.try_into().ok()?;
            Some(("6", Ipv6Addr::from(bytes).to_string(), port))
        }
        _ => None,
    }
}

/// Turns kernel records into Falco syscall events, with process, container and pod context.
#[derive(Debug)]
pub struct Enricher {
    pub procs: ProcTable,
    pub cgroups: CgroupResolver,
    pub pods: PodCache,
    pub hostname: String,
    pub node_name: String,
    boot_offset_ns: i64,
    users: HashMap<u32, String>,
}

impl Enricher {
    pub fn new(
        procs: ProcTable,
        cgroups: CgroupResolver,
        pods: PodCache,
        hostname: String,
        node_name: String,
    ) -> Self {
        Self {
            procs,
            cgroups,
            pods,
            hostname,
            node_name,
            boot_offset_ns: boot_offset_ns(),
            users: read_passwd("/etc/passwd"),
        }
    }

    /// Wall-clock nanoseconds of a `CLOCK_BOOTTIME` stamp.
    pub fn wall_ns(&self, boot_ns: u64) -> i64 {
        i64::try_from(boot_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.boot_offset_ns)
    }

    /// Feeds one record: lifecycle records update the process table; exec, syscall and
    /// isolation records of watched cgroups become events. Fork and exit give `None`.
    pub fn process(&mut self, ev: &KernelEvent) -> Option<SyscallEvent> {
        // an exec replaces the image: read the process's new identity first
        self.procs.apply(ev);
        match ev {
            KernelEvent::Fork { .. } | KernelEvent::Exit { .. } => None,
            KernelEvent::Exec {
                hdr,
                filename,
                argv,
                killed,
                kill_failed,
                deny_rule,
                ..
            } => {
                if hdr.flags & crate::abi::F_WATCHED == 0 {
                    return None;
                }
                let mut args = BTreeMap::new();
                args.insert("filename".into(), filename.clone());
                args.insert("exe".into(), argv.first().cloned().unwrap_or_default());
                if *killed {
                    args.insert("killed".into(), format!("rule {deny_rule}"));
                } else if *kill_failed {
                    args.insert("kill_failed".into(), format!("rule {deny_rule}"));
                }
                Some(self.build(hdr, "execve", 0, args, None))
            }
            KernelEvent::Syscall {
                hdr,
                nr,
                res,
                args,
                path,
                path2,
                addr,
            } => {
                let name = syscall_name(*nr)?;
                let (a, fd) = syscall_args(name, *res, args, path, path2, addr, hdr.pid);
                Some(self.build(hdr, name, *res, a, fd))
            }
            KernelEvent::NetDenied {
                hdr,
                family,
                port,
                addr,
            } => {
                let (typechar, ip) = if *family == 10 {
                    ("6", Ipv6Addr::from(*addr).to_string())
                } else {
                    let b = addr;
                    ("4", Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                };
                let mut a = BTreeMap::new();
                a.insert("addr".into(), format!("{ip}:{port}"));
                a.insert("denied".into(), "isolate".into());
                let fd = FdInfo {
                    num: -1,
                    name: format!("{ip}:{port}"),
                    typechar: typechar.into(),
                    sip: ip,
                    sport: i64::from(*port),
                    l4proto: "tcp".into(),
                    ..FdInfo::default()
                };
                Some(self.build(hdr, "connect", -1, a, Some(fd)))
            }
        }
    }

    fn build(
        &mut self,
        hdr: &Header,
        evt_type: &str,
        res: i64,
        args: BTreeMap<String, String>,
        fd: Option<FdInfo>,
    ) -> SyscallEvent {
        let entry = self.procs.get(hdr.pid).cloned().unwrap_or_default();
        let anc = self.procs.ancestry(hdr.pid);
        let parent = self.procs.get(entry.ppid.max(hdr.ppid));
        let name = if entry.name.is_empty() {
            hdr.comm.clone()
        } else {
            entry.name.clone()
        };
        let proc = ProcInfo {
            pid: i64::from(hdr.pid),
            ppid: i64::from(hdr.ppid),
            vpid: 0,
            name,
            exe: entry.exe.clone(),
            exepath: entry.exepath.clone(),
            args: entry.args.clone(),
            cwd: String::new(),
            tty: i64::from(hdr.tty),
            sid: 0,
            pname: parent.map(|p| p.name.clone()).unwrap_or_default(),
            pexe: parent.map(|p| p.exe.clone()).unwrap_or_default(),
            pexepath: parent.map(|p| p.exepath.clone()).unwrap_or_default(),
            pcmdline: parent.map(|p| p.cmdline()).unwrap_or_default(),
            ancestors: anc.names,
            ancestor_exepaths: anc.exepaths,
            env: Vec::new(),
        };
        let user = UserInfo {
            uid: i64::from(hdr.uid),
            loginuid: if hdr.loginuid == u32::MAX {
                -1
            } else {
                i64::from(hdr.loginuid)
            },
            name: self.users.get(&hdr.uid).cloned().unwrap_or_default(),
            loginname: if hdr.loginuid == u32::MAX {
                String::new()
            } else {
                self.users.get(&hdr.loginuid).cloned().unwrap_or_default()
            },
            gid: i64::from(hdr.gid),
            group: String::new(),
        };
        let (container, k8s) = self.container_of(hdr.cgroup_id);
        SyscallEvent {
            evt_type: evt_type.into(),
            evt_res: res,
            time_ns: self.wall_ns(hdr.ts_boot_ns),
            args,
            proc,
            user,
            fd,
            container,
            k8s,
            hostname: self.hostname.clone(),
        }
    }

    /// Container and pod fields of a cgroup: from the pod watch when it knows the pod,
    /// else from the cgroup path alone. Host cgroups give `container.id` = `host`.
    pub fn container_of(&mut self, cgroup_id: u64) -> (ContainerInfo, K8sInfo) {
        let cref: Option<ContainerRef> = self
            .cgroups
            .resolve(cgroup_id)
            .and_then(|c| c.container.clone());
        let Some(cref) = cref else {
            return (
                ContainerInfo {
                    id: "host".into(),
                    ..ContainerInfo::default()
                },
                K8sInfo {
                    node_name: self.node_name.clone(),
                    ..K8sInfo::default()
                },
            );
        };
        let mut container = ContainerInfo {
            id: cref.short_id().to_string(),
            ..ContainerInfo::default()
        };
        let mut k8s = K8sInfo {
            pod_uid: cref.pod_uid.clone(),
            node_name: self.node_name.clone(),
            ..K8sInfo::default()
        };
        if let Some(pod) = self.pods.get(&cref.pod_uid) {
            k8s.ns_name.clone_from(&pod.namespace);
            k8s.pod_name.clone_from(&pod.name);
            k8s.pod_labels.clone_from(&pod.labels);
            if !pod.node_name.is_empty() {
                k8s.node_name.clone_from(&pod.node_name);
            }
            if let Some(c) = pod.containers.get(&cref.container_id) {
                container.name.clone_from(&c.name);
                container.image_repository.clone_from(&c.image_repository);
                container.image_tag.clone_from(&c.image_tag);
                container.privileged = c.privileged;
            }
        }
        (container, k8s)
    }
}

fn syscall_args(
    name: &str,
    res: i64,
    a: &[u64; 6],
    path: &str,
    path2: &str,
    addr: &[u8],
    pid: u32,
) -> (BTreeMap<String, String>, Option<FdInfo>) {
    let mut m = BTreeMap::new();
    let mut fd = None;
    let file_fd = |p: &str, num: i64| FdInfo {
        num,
        name: absolute(pid, p),
        typechar: "f".into(),
        ..FdInfo::default()
    };
    let res_fd = if res >= 0 { res } else { -1 };
    match name {
        "open" | "openat" | "openat2" => {
            let flags = if name == "open" { a[1] } else { a[2] };
            m.insert("flags".into(), open_flags(flags));
            m.insert("name".into(), path.to_string());
            fd = Some(file_fd(path, res_fd));
        }
        "connect" | "bind" | "sendto" => {
            m.insert("fd".into(), a[0].to_string());
            if let Some((t, ip, port)) = parse_sockaddr(addr) {
                m.insert("addr".into(), format!("{ip}:{port}"));
                let l4 = if name == "sendto" { "udp" } else { "tcp" };
                fd = Some(if name == "bind" {
                    FdInfo {
                        num: i64::try_from(a[0]).unwrap_or(-1),
                        name: format!("{ip}:{port}"),
                        typechar: t.into(),
                        cip: String::new(),
                        sip: ip,
                        sport: i64::from(port),
                        l4proto: l4.into(),
                        ..FdInfo::default()
                    }
                } else {
                    FdInfo {
                        num: i64::try_from(a[0]).unwrap_or(-1),
                        name: format!("->{ip}:{port}"),
                        typechar: t.into(),
                        sip: ip,
                        sport: i64::from(port),
                        l4proto: l4.into(),
                        ..FdInfo::default()
                    }
                });
            }
        }
        "accept" | "accept4" => {
            if let Some((t, ip, port)) = parse_sockaddr(addr) {
                m.insert("addr".into(), format!("{ip}:{port}"));
                fd = Some(FdInfo {
                    num: res_fd,
                    name: format!("{ip}:{port}->"),
                    typechar: t.into(),
                    cip: ip,
                    cport: i64::from(port),
                    l4proto: "tcp".into(),
                    ..FdInfo::default()
                });
            }
        }
        "listen" => {
            m.insert("fd".into(), a[0].to_string());
            m.insert("backlog".into(), a[1].to_string());
        }
        "socket" => {
            m.insert("domain".into(), socket_domain(a[0]));
            m.insert("type".into(), (a[1] & 0xf).to_string());
            m.insert("proto".into(), a[2].to_string());
        }
        "ptrace" => {
            m.insert("request".into(), ptrace_request(a[0]));
            m.insert("pid".into(), a[1].to_string());
        }
        "setns" => {
            m.insert("fd".into(), a[0].to_string());
            m.insert("nstype".into(), clone_flags(a[1]));
        }
        "unshare" => {
            m.insert("flags".into(), clone_flags(a[0]));
        }
        "mount" => {
            m.insert("dev".into(), path.to_string());
            m.insert("dir".into(), path2.to_string());
            m.insert("flags".into(), a[3].to_string());
        }
        "init_module" => {
            m.insert("uargs".into(), path.to_string());
        }
        "finit_module" => {
            m.insert("fd".into(), a[0].to_string());
            m.insert("uargs".into(), path.to_string());
        }
        "bpf" => {
            m.insert("cmd".into(), a[0].to_string());
        }
        "chmod" | "fchmodat" | "fchmodat2" => {
            let mode = if name == "chmod" { a[1] } else { a[2] };
            m.insert("filename".into(), path.to_string());
            m.insert("mode".into(), format!("{mode:o}"));
            fd = Some(file_fd(path, -1));
        }
        "fchmod" => {
            m.insert("fd".into(), a[0].to_string());
            m.insert("mode".into(), format!("{:o}", a[1]));
        }
        "memfd_create" => {
            m.insert("name".into(), path.to_string());
            m.insert("flags".into(), a[1].to_string());
            fd = Some(FdInfo {
                num: res_fd,
                name: format!("memfd:{path}"),
                typechar: "m".into(),
                ..FdInfo::default()
            });
        }
        "execveat" => {
            m.insert("dirfd".into(), (a[0] as i64 as i32).to_string());
            m.insert("pathname".into(), path.to_string());
            m.insert("flags".into(), a[4].to_string());
        }
        "symlink" | "symlinkat" => {
            m.insert("target".into(), path.to_string());
            m.insert("linkpath".into(), path2.to_string());
        }
        "link" | "linkat" => {
            m.insert("oldpath".into(), path.to_string());
            m.insert("newpath".into(), path2.to_string());
        }
        "dup2" | "dup3" => {
            m.insert("oldfd".into(), a[0].to_string());
            m.insert("newfd".into(), a[1].to_string());
            fd = Some(describe_fd(pid, a[1], res_fd));
        }
        _ => {}
    }
    (m, fd)
}

/// A path as the process named it, made absolute against its working directory when
/// relative (best effort: the process may be gone).
fn absolute(pid: u32, p: &str) -> String {
    if p.starts_with('/') || p.is_empty() {
        return p.to_string();
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd.join(p).to_string_lossy().into_owned(),
        Err(_) => p.to_string(),
    }
}

/// What an fd of a live process is: a file, or a TCP socket found by inode in
/// `/proc/PID/net/tcp{,6}`.
fn describe_fd(pid: u32, fdn: u64, num: i64) -> FdInfo {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fdn}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(inode) = link
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
    {
        for (file, t) in [("tcp", "4"), ("tcp6", "6"), ("udp", "4"), ("udp6", "6")] {
            let table =
                std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
            for line in table.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.get(9) == Some(&inode) {
                    let (lip, lport) = hex_addr(cols.first().copied().unwrap_or(""));
                    let (rip, rport) = hex_addr(cols.get(1).copied().unwrap_or(""));
                    let proto = if file.starts_with("tcp") {
                        "tcp"
                    } else {
                        "udp"
                    };
                    return FdInfo {
                        num,
                        name: format!("{lip}:{lport}->{rip}:{rport}"),
                        typechar: t.into(),
                        cip: lip,
                        cport: i64::from(lport),
                        sip: rip,
                        sport: i64::from(rport),
                        l4proto: proto.into(),
                    };
                }
            }
        }
        return FdInfo {
            num,
            name: link,
            typechar: "u".into(),
            ..FdInfo::default()
        };
    }
    let typechar = if link.starts_with('/') {
        "f"
    } else if link.starts_with("pipe:") {
        "p"
    } else {
        "o"
    };
    FdInfo {
        num,
        name: link,
        typechar: typechar.into(),
        ..FdInfo::default()
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6) with a hex port.
fn hex_addr(s: &str) -> (String, u16) {
    let Some((ip, port)) = s.split_once(':') else {
        return (String::new(), 0);
    };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let words: Vec<u32> = (0..ip.len() / 8)
        .filter_map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect();
    let ip = match words.as_slice() {
        [w] => Ipv4Addr::from(w.to_le_bytes()).to_string(),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                if let Some(chunk) = bytes.get_mut(i * 4..i * 4 + 4) {
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
            }
            Ipv6Addr::from(bytes).to_string()
        }
        _ => String::new(),
    };
    (ip, port)
}

fn boot_offset_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

fn read_passwd(path: &str) -> HashMap<u32, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_like_falco() {
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(open_flags(0o1101), "O_WRONLY|O_CREAT|O_TRUNC");
        assert_eq!(open_flags(0o2000002), "O_RDWR|O_CLOEXEC");
    }

    #[test]
    fn sockaddrs_parse() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend([0u8; 8]);
        assert_eq!(parse_sockaddr(&v4), Some(("4", "127.0.0.1".into(), 8080)));
        let mut v6 = vec![10u8, 0, 0, 80, 0, 0, 0, 0];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0u8; 4]);
        assert_eq!(parse_sockaddr(&v6), Some(("6", "::1".into(), 80)));
        assert_eq!(parse_sockaddr(&[1, 0]), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }

    #[test]
    fn proc_net_addresses_decode() {
        assert_eq!(hex_addr("0100007F:1F90"), ("127.0.0.1".into(), 8080));
        assert_eq!(
            hex_addr("00000000000000000000000001000000:0050"),
            ("::1".into(), 80)
        );
        assert_eq!(hex_addr("junk"), (String::new(), 0));
    }

    #[test]
    fn every_reported_syscall_has_a_name() {
        // The numbers named here are exactly the syscalls the kernel side reports.
        let mut got: Vec<&str> = (0..1024).filter_map(syscall_name).collect();
        let mut expected = crate::probe::SYSCALLS.to_vec();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(syscall_name(0), None);
    }

    #[test]
    fn args_for_opens_and_links() {
        let (m, fd) = syscall_args("openat", 3, &[0, 0, 0o101, 0, 0, 0], "/etc/x", "", &[], 1);
        assert_eq!(m["flags"], "O_WRONLY|O_CREAT");
        let fd = fd.unwrap();
        assert_eq!(
            (fd.num, fd.name.as_str(), fd.typechar.as_str()),
            (3, "/etc/x", "f")
        );
        let (m, _) = syscall_args("symlinkat", 0, &[0; 6], "/etc/shadow", "/tmp/s", &[], 1);
        assert_eq!(
            (m["target"].as_str(), m["linkpath"].as_str()),
            ("/etc/shadow", "/tmp/s")
        );
        let (m, _) = syscall_args("ptrace", 0, &[16, 42, 0, 0, 0, 0], "", "", &[], 1);
        assert_eq!(m["request"], "PTRACE_ATTACH");
        let (m, _) = syscall_args("socket", 3, &[17, 3, 0, 0, 0, 0], "", "", &[], 1);
        assert_eq!(m["domain"], "AF_PACKET");
    }
}
