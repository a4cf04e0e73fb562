//! Syscall-source fields (`evt.*`, `proc.*`, `user.*`, `group.*`, `fd.*`, `container.*`,
//! `k8s.*`, `thread.*`) and the `session.*` fields the engine attaches.

use std::borrow::Cow;

use super::{def, ArgKind, Extract, FieldArg, FieldDef, FieldType as T, SYS};
use crate::event::{Event, SyscallEvent};
use crate::value::Value;

/// Defines an extraction function over the syscall payload.
macro_rules! sx {
    (|$s:ident, $a:ident| $body:expr) => {{
        #[allow(unused_variables)]
        fn f<'e>(e: &'e Event, $a: &'e FieldArg) -> Value<'e> {
            match e.syscall() {
                Some($s) => $body,
                None => Value::Missing,
            }
        }
        Some(f as Extract)
    }};
}

/// Defines an extraction function over the session fields.
macro_rules! sess {
    (|$s:ident| $body:expr) => {{
        fn f<'e>(e: &'e Event, _: &'e FieldArg) -> Value<'e> {
            match e.session() {
                Some($s) => $body,
                None => Value::Missing,
            }
        }
        Some(f as Extract)
    }};
}

fn s(x: &str) -> Value<'_> {
    if x.is_empty() {
        Value::Missing
    } else {
        Value::Str(Cow::Borrowed(x))
    }
}

fn list(items: &[String]) -> Value<'_> {
    if items.is_empty() {
        Value::Missing
    } else {
        Value::List(items.iter().map(|x| Value::Str(Cow::Borrowed(x))).collect())
    }
}

fn join(first: &str, rest: &[String]) -> String {
    let mut out = String::from(first);
    for a in rest {
        out.push(' ');
        out.push_str(a);
    }
    out
}

fn dirname(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "",
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn is_file(ev: &SyscallEvent) -> Option<&str> {
    ev.fd
        .as_ref()
        .filter(|f| f.typechar == "f" || f.typechar == "d" || f.typechar.is_empty())
        .map(|f| f.name.as_str())
        .filter(|n| n.starts_with('/'))
}

/// Falco's names for common error numbers (`evt.res`).
fn errno_name(res: i64) -> Cow<'static, str> {
    let name = match -res {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        28 => "ENOSPC",
        30 => "EROFS",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        98 => "EADDRINUSE",
        101 => "ENETUNREACH",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        115 => "EINPROGRESS",
        other => return Cow::Owned(format!("E{other}")),
    };
    Cow::Borrowed(name)
}

fn typechar_name(c: &str) -> Option<&'static str> {
    Some(match c {
        "f" => "file",
        "d" => "directory",
        "4" => "ipv4",
        "6" => "ipv6",
        "u" => "unix",
        "p" => "pipe",
        "e" => "event",
        "s" => "signalfd",
        "l" => "eventpoll",
        "i" => "inotify",
        "t" => "timerfd",
        "n" => "netlink",
        "b" => "bpf",
        "r" => "userfaultfd",
        "m" => "memfd",
        "o" => "other",
        _ => return None,
    })
}

pub(super) fn register(d: &mut Vec<FieldDef>) {
    use ArgKind::{Index, Key, None as NoArg};
    let no = None;
    // evt.*
    d.push(def(
        "evt.type",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the event type (syscall name), e.g. execve, openat, connect",
        sx!(|s, a| Value::Str(Cow::Borrowed(&s.evt_type))),
    ));
    d.push(def(
        "evt.time",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "the event time in nanoseconds since the epoch",
        sx!(|s, a| Value::Int(s.time_ns)),
    ));
    d.push(def(
        "evt.rawtime",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "the event time in nanoseconds since the epoch",
        sx!(|s, a| Value::Int(s.time_ns)),
    ));
    d.push(def(
        "evt.res",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the result as text: SUCCESS or the errno name (ENOENT, EPERM, ...)",
        sx!(|s, a| if s.evt_res >= 0 {
            Value::Str(Cow::Borrowed("SUCCESS"))
        } else {
            Value::Str(errno_name(s.evt_res))
        }),
    ));
    d.push(def(
        "evt.rawres",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the raw return value (negative errno on failure)",
        sx!(|s, a| Value::Int(s.evt_res)),
    ));
    d.push(def(
        "evt.failed",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "true when the syscall returned an error",
        sx!(|s, a| Value::Bool(s.evt_res < 0)),
    ));
    d.push(def(
        "evt.arg",
        T::String,
        false,
        SYS,
        Key,
        true,
        "a syscall argument by name (evt.arg.flags or evt.arg[flags]), as text",
        sx!(|s, a| match a {
            FieldArg::Key(k) => s
                .args
                .get(k.as_str())
                .map_or(Value::Missing, |v| Value::Str(Cow::Borrowed(v))),
            _ => Value::Missing,
        }),
    ));
    d.push(def(
        "evt.rawarg",
        T::String,
        false,
        SYS,
        Key,
        true,
        "a syscall argument by name, raw (not captured by Tether)",
        no,
    ));
    d.push(def(
        "evt.args",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "all arguments as name=value text",
        sx!(|s, a| if s.args.is_empty() {
            Value::Missing
        } else {
            Value::Str(Cow::Owned(
                s.args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        }),
    ));
    d.push(def(
        "evt.hostname",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the host name of the node",
        sx!(|s, a| self::s(&s.hostname)),
    ));
    d.push(def(
        "evt.num",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the event sequence number (not produced by Tether)",
        no,
    ));
    d.push(def(
        "evt.dir",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the event direction; Tether reports exit events only, so always <",
        sx!(|s, a| Value::Str(Cow::Borrowed("<"))),
    ));
    d.push(def(
        "evt.buffer",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the I/O buffer of read/write events (not captured by Tether)",
        no,
    ));
    d.push(def(
        "evt.is_open_read",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "true for an open that asks for read access",
        sx!(|s, a| open_flag(s, "O_RDONLY", "O_RDWR")),
    ));
    d.push(def(
        "evt.is_open_write",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "true for an open that asks for write access",
        sx!(|s, a| open_flag(s, "O_WRONLY", "O_RDWR")),
    ));
    d.push(def(
        "evt.is_open_exec",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "true for an open that creates an executable file (not captured by Tether)",
        no,
    ));
    d.push(def(
        "syscall.type",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the syscall name",
        sx!(|s, a| Value::Str(Cow::Borrowed(&s.evt_type))),
    ));
    // proc.*
    d.push(def(
        "proc.pid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the process id",
        sx!(|s, a| Value::Int(s.proc.pid)),
    ));
    d.push(def(
        "proc.ppid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the parent process id",
        sx!(|s, a| Value::Int(s.proc.ppid)),
    ));
    d.push(def(
        "proc.vpid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the process id in its pid namespace",
        sx!(|s, a| Value::Int(s.proc.vpid)),
    ));
    d.push(def(
        "proc.sid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the session id of the process",
        sx!(|s, a| Value::Int(s.proc.sid)),
    ));
    d.push(def(
        "proc.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the name of the executable (comm)",
        sx!(|s, a| self::s(&s.proc.name)),
    ));
    d.push(def(
        "proc.exe",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "argv[0] of the process",
        sx!(|s, a| self::s(&s.proc.exe)),
    ));
    d.push(def(
        "proc.exepath",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the full path of the executable",
        sx!(|s, a| self::s(&s.proc.exepath)),
    ));
    d.push(def(
        "proc.args",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the arguments (argv[1..]) joined by spaces",
        sx!(|s, a| Value::Str(Cow::Owned(s.proc.args.join(" ")))),
    ));
    d.push(def(
        "proc.cmdline",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the name and arguments, e.g. bash -c id",
        sx!(|s, a| Value::Str(Cow::Owned(join(&s.proc.name, &s.proc.args)))),
    ));
    d.push(def(
        "proc.cmdnargs",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the number of arguments",
        sx!(|s, a| Value::Int(i64::try_from(s.proc.args.len()).unwrap_or(i64::MAX))),
    ));
    d.push(def(
        "proc.cwd",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the working directory",
        sx!(|s, a| self::s(&s.proc.cwd)),
    ));
    d.push(def(
        "proc.env",
        T::String,
        false,
        SYS,
        Key,
        false,
        "the environment (KEY=VALUE, space separated), or one variable with [NAME]",
        sx!(|s, a| match a {
            FieldArg::Key(k) => s
                .proc
                .env
                .iter()
                .find_map(|kv| kv
                    .strip_prefix(k.as_str())
                    .and_then(|r| r.strip_prefix('=')))
                .map_or(Value::Missing, |v| Value::Str(Cow::Borrowed(v))),
            _ =>
                if s.proc.env.is_empty() {
                    Value::Missing
                } else {
                    Value::Str(Cow::Owned(s.proc.env.join(" ")))
                },
        }),
    ));
    d.push(def(
        "proc.tty",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the controlling terminal, 0 when none",
        sx!(|s, a| Value::Int(s.proc.tty)),
    ));
    d.push(def(
        "proc.pname",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the parent's name",
        sx!(|s, a| self::s(&s.proc.pname)),
    ));
    d.push(def(
        "proc.pexe",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the parent's argv[0]",
        sx!(|s, a| self::s(&s.proc.pexe)),
    ));
    d.push(def(
        "proc.pexepath",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the parent's executable path",
        sx!(|s, a| self::s(&s.proc.pexepath)),
    ));
    d.push(def(
        "proc.pcmdline",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the parent's name and arguments",
        sx!(|s, a| self::s(&s.proc.pcmdline)),
    ));
    d.push(def("proc.aname", T::String, false, SYS, Index, false, "an ancestor's name: [0] is the process, [1] its parent, ...; without an index, any ancestor", sx!(|s, a| ancestor(&s.proc.name, &s.proc.ancestors, a))));
    d.push(def("proc.aexepath", T::String, false, SYS, Index, false, "an ancestor's executable path: [0] is the process, [1] its parent, ...; without an index, any ancestor", sx!(|s, a| ancestor(&s.proc.exepath, &s.proc.ancestor_exepaths, a))));
    d.push(def(
        "proc.aexe",
        T::String,
        false,
        SYS,
        Index,
        false,
        "an ancestor's argv[0] (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.apid",
        T::Int,
        false,
        SYS,
        Index,
        false,
        "an ancestor's pid (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.sname",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the session leader's name (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.is_vpgid_leader",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the process leads its process group (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.vpgid.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the process group leader's name (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.vpgid.exe",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the process group leader's argv[0] (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.duration",
        T::RelTime,
        false,
        SYS,
        NoArg,
        false,
        "nanoseconds since the process started (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.ppid.duration",
        T::RelTime,
        false,
        SYS,
        NoArg,
        false,
        "nanoseconds since the parent started (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.is_exe_upper_layer",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the executable lives in the overlay upper layer (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.is_exe_from_memfd",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the executable is a memfd (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.exe_ino.mtime",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "the executable's modification time (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.exe_ino.ctime",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "the executable's change time (not captured by Tether)",
        no,
    ));
    d.push(def(
        "proc.exe_ino.ctime_duration_proc_start",
        T::RelTime,
        false,
        SYS,
        NoArg,
        false,
        "time between the executable's change and process start (not captured by Tether)",
        no,
    ));
    d.push(def(
        "thread.cap_permitted",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the permitted capabilities (not captured by Tether)",
        no,
    ));
    d.push(def(
        "thread.cap_effective",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the effective capabilities (not captured by Tether)",
        no,
    ));
    d.push(def(
        "thread.cap_inheritable",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the inheritable capabilities (not captured by Tether)",
        no,
    ));
    // user.*, group.*
    d.push(def(
        "user.uid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the user id",
        sx!(|s, a| Value::Int(s.user.uid)),
    ));
    d.push(def(
        "user.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the user name",
        sx!(|s, a| self::s(&s.user.name)),
    ));
    d.push(def(
        "user.loginuid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the audit login uid, -1 when unset",
        sx!(|s, a| Value::Int(s.user.loginuid)),
    ));
    d.push(def(
        "user.loginname",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the audit login user name",
        sx!(|s, a| self::s(&s.user.loginname)),
    ));
    d.push(def(
        "group.gid",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the group id",
        sx!(|s, a| Value::Int(s.user.gid)),
    ));
    d.push(def(
        "group.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the group name",
        sx!(|s, a| self::s(&s.user.group)),
    ));
    // fd.*
    d.push(def(
        "fd.num",
        T::Int,
        false,
        SYS,
        NoArg,
        false,
        "the file descriptor number",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| Value::Int(f.num))),
    ));
    d.push(def(
        "fd.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the path of a file, or sip:sport->dip:dport for a socket",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| self::s(&f.name))),
    ));
    d.push(def(
        "fd.nameraw",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the name as the syscall passed it",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| self::s(&f.name))),
    ));
    d.push(def(
        "fd.directory",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the directory of a file path",
        sx!(|s, a| is_file(s).map_or(Value::Missing, |p| Value::Str(Cow::Borrowed(dirname(p))))),
    ));
    d.push(def(
        "fd.filename",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the last component of a file path",
        sx!(|s, a| is_file(s).map_or(Value::Missing, |p| Value::Str(Cow::Borrowed(basename(p))))),
    ));
    d.push(def(
        "fd.typechar",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the fd type as one character: f, 4, 6, u, p, ...",
        sx!(|s, a| s
            .fd
            .as_ref()
            .map_or(Value::Missing, |f| self::s(&f.typechar))),
    ));
    d.push(def(
        "fd.type",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the fd type: file, directory, ipv4, ipv6, unix, pipe, ...",
        sx!(|s, a| s
            .fd
            .as_ref()
            .and_then(|f| typechar_name(&f.typechar))
            .map_or(Value::Missing, |n| Value::Str(Cow::Borrowed(n)))),
    ));
    d.push(def(
        "fd.types",
        T::String,
        true,
        SYS,
        NoArg,
        false,
        "the types of all fds of the process (not captured by Tether)",
        no,
    ));
    d.push(def(
        "fd.sip",
        T::IpAddr,
        false,
        SYS,
        NoArg,
        false,
        "the server (destination) IP of a connection",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| self::s(&f.sip))),
    ));
    d.push(def(
        "fd.sport",
        T::Port,
        false,
        SYS,
        NoArg,
        false,
        "the server (destination) port of a connection",
        sx!(|s, a| s
            .fd
            .as_ref()
            .filter(|f| f.sport > 0)
            .map_or(Value::Missing, |f| Value::Int(f.sport))),
    ));
    d.push(def(
        "fd.cip",
        T::IpAddr,
        false,
        SYS,
        NoArg,
        false,
        "the client (source) IP of a connection",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| self::s(&f.cip))),
    ));
    d.push(def(
        "fd.cport",
        T::Port,
        false,
        SYS,
        NoArg,
        false,
        "the client (source) port of a connection",
        sx!(|s, a| s
            .fd
            .as_ref()
            .filter(|f| f.cport > 0)
            .map_or(Value::Missing, |f| Value::Int(f.cport))),
    ));
    d.push(def(
        "fd.dip",
        T::IpAddr,
        false,
        SYS,
        NoArg,
        false,
        "the destination IP of the connection (same as fd.sip)",
        sx!(|s, a| s.fd.as_ref().map_or(Value::Missing, |f| self::s(&f.sip))),
    ));
    d.push(def(
        "fd.dport",
        T::Port,
        false,
        SYS,
        NoArg,
        false,
        "the destination port of the connection (same as fd.sport)",
        sx!(|s, a| s
            .fd
            .as_ref()
            .filter(|f| f.sport > 0)
            .map_or(Value::Missing, |f| Value::Int(f.sport))),
    ));
    d.push(def(
        "fd.ip",
        T::IpAddr,
        false,
        SYS,
        NoArg,
        false,
        "either end's IP (matches client or server)",
        sx!(
            |s, a| s.fd.as_ref().map_or(Value::Missing, |f| Value::AnyOf(vec![
                self::s(&f.cip),
                self::s(&f.sip)
            ]))
        ),
    ));
    d.push(def(
        "fd.port",
        T::Port,
        false,
        SYS,
        NoArg,
        false,
        "either end's port (matches client or server)",
        sx!(
            |s, a| s.fd.as_ref().map_or(Value::Missing, |f| Value::AnyOf(vec![
                Value::Int(f.cport),
                Value::Int(f.sport)
            ]))
        ),
    ));
    d.push(def(
        "fd.l4proto",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the layer-4 protocol: tcp, udp, icmp, raw",
        sx!(|s, a| s
            .fd
            .as_ref()
            .map_or(Value::Missing, |f| self::s(&f.l4proto))),
    ));
    d.push(def(
        "fd.sockfamily",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the socket family: ip or unix",
        sx!(|s, a| s
            .fd
            .as_ref()
            .and_then(|f| match f.typechar.as_str() {
                "4" | "6" => Some("ip"),
                "u" => Some("unix"),
                _ => None,
            })
            .map_or(Value::Missing, |n| Value::Str(Cow::Borrowed(n)))),
    ));
    d.push(def(
        "fd.connected",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the socket is connected (not captured by Tether)",
        no,
    ));
    d.push(def(
        "fd.name_changed",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the fd name changed in this event (not captured by Tether)",
        no,
    ));
    for (n, desc) in [
        (
            "fd.sip.name",
            "the server IP's domain name (not captured by Tether)",
        ),
        (
            "fd.cip.name",
            "the client IP's domain name (not captured by Tether)",
        ),
        (
            "fd.lip.name",
            "the local IP's domain name (not captured by Tether)",
        ),
        (
            "fd.rip.name",
            "the remote IP's domain name (not captured by Tether)",
        ),
        (
            "fd.lip",
            "the local IP, which needs the socket's role (not captured by Tether)",
        ),
        (
            "fd.rip",
            "the remote IP, which needs the socket's role (not captured by Tether)",
        ),
    ] {
        d.push(def(n, T::String, false, SYS, NoArg, false, desc, no));
    }
    for (n, desc) in [
        (
            "fd.lport",
            "the local port, which needs the socket's role (not captured by Tether)",
        ),
        (
            "fd.rport",
            "the remote port, which needs the socket's role (not captured by Tether)",
        ),
    ] {
        d.push(def(n, T::Port, false, SYS, NoArg, false, desc, no));
    }
    for (n, desc) in [
        (
            "fd.net",
            "either end's network (CIDR match, not captured by Tether)",
        ),
        (
            "fd.snet",
            "the server network (CIDR match, not captured by Tether)",
        ),
        (
            "fd.cnet",
            "the client network (CIDR match, not captured by Tether)",
        ),
        (
            "fd.lnet",
            "the local network (CIDR match, not captured by Tether)",
        ),
        (
            "fd.rnet",
            "the remote network (CIDR match, not captured by Tether)",
        ),
    ] {
        d.push(def(n, T::IpNet, false, SYS, NoArg, false, desc, no));
    }
    // container.*
    d.push(def(
        "container.id",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the 12-character container id, or host",
        sx!(|s, a| if s.container.id.is_empty() {
            Value::Str(Cow::Borrowed("host"))
        } else {
            Value::Str(Cow::Borrowed(&s.container.id))
        }),
    ));
    d.push(def(
        "container.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the container name",
        sx!(|s, a| self::s(&s.container.name)),
    ));
    d.push(def(
        "container.image.repository",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the image repository, e.g. docker.io/library/nginx",
        sx!(|s, a| self::s(&s.container.image_repository)),
    ));
    d.push(def(
        "container.image.tag",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the image tag",
        sx!(|s, a| self::s(&s.container.image_tag)),
    ));
    d.push(def(
        "container.image",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the image, repository:tag",
        sx!(|s, a| if s.container.image_repository.is_empty() {
            Value::Missing
        } else if s.container.image_tag.is_empty() {
            Value::Str(Cow::Borrowed(&s.container.image_repository))
        } else {
            Value::Str(Cow::Owned(format!(
                "{}:{}",
                s.container.image_repository, s.container.image_tag
            )))
        }),
    ));
    d.push(def(
        "container.privileged",
        T::Bool,
        false,
        SYS,
        NoArg,
        false,
        "whether the container runs privileged",
        sx!(|s, a| s.container.privileged.map_or(Value::Missing, Value::Bool)),
    ));
    d.push(def(
        "container.start_ts",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "the container start time (not captured by Tether)",
        no,
    ));
    d.push(def(
        "container.mounts",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the container's mounts (not captured by Tether)",
        no,
    ));
    d.push(def(
        "container.mount.dest",
        T::String,
        false,
        SYS,
        Key,
        false,
        "a mount by destination path (not captured by Tether)",
        no,
    ));
    d.push(def(
        "container.label",
        T::String,
        false,
        SYS,
        Key,
        true,
        "a container label (not captured by Tether)",
        no,
    ));
    // k8s.*
    d.push(def(
        "k8s.ns.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the pod's namespace",
        sx!(|s, a| self::s(&s.k8s.ns_name)),
    ));
    d.push(def(
        "k8s.pod.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the pod name",
        sx!(|s, a| self::s(&s.k8s.pod_name)),
    ));
    d.push(def(
        "k8s.pod.uid",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the pod uid",
        sx!(|s, a| self::s(&s.k8s.pod_uid)),
    ));
    d.push(def(
        "k8s.pod.labels",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the pod labels as key:value, comma separated",
        sx!(|s, a| if s.k8s.pod_labels.is_empty() {
            Value::Missing
        } else {
            Value::Str(Cow::Owned(
                s.k8s
                    .pod_labels
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        }),
    ));
    d.push(def(
        "k8s.pod.label",
        T::String,
        false,
        SYS,
        Key,
        true,
        "one pod label by key (k8s.pod.label[app] or k8s.pod.label.app)",
        sx!(|s, a| match a {
            FieldArg::Key(k) => s
                .k8s
                .pod_labels
                .get(k.as_str())
                .map_or(Value::Missing, |v| Value::Str(Cow::Borrowed(v))),
            _ => Value::Missing,
        }),
    ));
    d.push(def(
        "k8s.ns.label",
        T::String,
        false,
        SYS,
        Key,
        true,
        "a namespace label (not captured by Tether)",
        no,
    ));
    d.push(def(
        "k8s.node.name",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the node the pod runs on",
        sx!(|s, a| self::s(&s.k8s.node_name)),
    ));
    // session.*
    d.push(def(
        "session.id",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the exec session (admission request uid, else audit id) that started this process tree",
        sess!(|x| s(&x.id)),
    ));
    d.push(def(
        "session.kind",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "exec, attach, portforward or debug",
        sess!(|x| s(&x.kind)),
    ));
    d.push(def(
        "session.user",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the Kubernetes user who opened the session",
        sess!(|x| s(&x.user)),
    ));
    d.push(def(
        "session.groups",
        T::String,
        true,
        SYS,
        NoArg,
        false,
        "the user's groups",
        sess!(|x| list(&x.groups)),
    ));
    d.push(def(
        "session.uid",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the Kubernetes user's uid",
        sess!(|x| s(&x.uid)),
    ));
    d.push(def(
        "session.auditid",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the audit ID of the exec request",
        sess!(|x| s(&x.auditid)),
    ));
    d.push(def(
        "session.command",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "the command the session asked for, joined by spaces",
        sess!(|x| if x.command.is_empty() {
            Value::Missing
        } else {
            Value::Str(Cow::Owned(x.command.join(" ")))
        }),
    ));
    d.push(def(
        "session.sourceips",
        T::IpAddr,
        true,
        SYS,
        NoArg,
        false,
        "the client addresses of the exec request",
        sess!(|x| list(&x.sourceips)),
    ));
    d.push(def(
        "session.started",
        T::AbsTime,
        false,
        SYS,
        NoArg,
        false,
        "when the session started, nanoseconds since the epoch",
        sess!(|x| Value::Int(x.started_ns)),
    ));
    d.push(def(
        "session.confidence",
        T::String,
        false,
        SYS,
        NoArg,
        false,
        "how the process was tied to the session: exact, matched or none",
        {
            fn f<'e>(e: &'e Event, _: &'e FieldArg) -> Value<'e> {
                match e.session() {
                    Some(x) if !x.confidence.is_empty() => Value::Str(Cow::Borrowed(&x.confidence)),
                    Some(_) => Value::Str(Cow::Borrowed("exact")),
                    None if e.syscall().is_some() => Value::Str(Cow::Borrowed("none")),
                    None => Value::Missing,
                }
            }
            Some(f as Extract)
        },
    ));
}

fn open_flag<'e>(s: &'e SyscallEvent, a: &str, b: &str) -> Value<'e> {
    if !s.evt_type.starts_with("open") {
        return Value::Missing;
    }
    match s.args.get("flags") {
        Some(f) => Value::Bool(f.split('|').any(|x| x == a || x == b)),
        None => Value::Missing,
    }
}

fn ancestor<'e>(own: &'e str, ancestors: &'e [String], a: &FieldArg) -> Value<'e> {
    match a {
        FieldArg::Index(0) => s(own),
        FieldArg::Index(n) => ancestors.get(n - 1).map_or(Value::Missing, |x| s(x)),
        _ if ancestors.is_empty() => Value::Missing,
        _ => Value::AnyOf(ancestors.iter().map(|x| s(x)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FdInfo, SessionFields};
    use crate::fields::resolve;

    fn ev() -> Event {
        let mut s = SyscallEvent {
            evt_type: "openat".into(),
            evt_res: -2,
            ..Default::default()
        };
        s.proc.name = "bash".into();
        s.proc.args = vec!["-c".into(), "id".into()];
        s.proc.ancestors = vec!["sh".into(), "containerd-shim".into()];
        s.args.insert("flags".into(), "O_WRONLY|O_CREAT".into());
        s.fd = Some(FdInfo {
            name: "/etc/shadow".into(),
            typechar: "f".into(),
            ..Default::default()
        });
        Event::from_syscall(s)
    }

    fn get(e: &Event, name: &str, arg: Option<&str>) -> String {
        resolve(name, arg).unwrap().extract(e).to_string()
    }

    #[test]
    fn extraction() {
        let e = ev();
        assert_eq!(get(&e, "proc.cmdline", None), "bash -c id");
        assert_eq!(get(&e, "evt.res", None), "ENOENT");
        assert_eq!(get(&e, "proc.aname", Some("2")), "containerd-shim");
        assert_eq!(get(&e, "proc.aname", Some("0")), "bash");
        assert_eq!(get(&e, "proc.aname", Some("9")), "<NA>");
        assert_eq!(get(&e, "fd.directory", None), "/etc");
        assert_eq!(get(&e, "fd.filename", None), "shadow");
        assert_eq!(get(&e, "evt.arg.flags", None), "O_WRONLY|O_CREAT");
        assert_eq!(get(&e, "evt.is_open_write", None), "true");
        assert_eq!(get(&e, "evt.is_open_read", None), "false");
        assert_eq!(get(&e, "container.id", None), "host");
        assert_eq!(get(&e, "thread.cap_effective", None), "<NA>");
        assert_eq!(get(&e, "session.confidence", None), "none");
        let mut e2 = e.clone();
        e2.set_session(SessionFields {
            user: "alice".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        });
        assert_eq!(get(&e2, "session.user", None), "alice");
        assert_eq!(get(&e2, "session.groups", None), "(dev)");
    }
}
