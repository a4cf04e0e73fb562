/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Tether node enforcer: process lifecycle, syscalls of interest and kernel-side
 * enforcement. Entry points are thin: each hook calls one function and returns its verdict.
 * Every event goes through one ring buffer with no-wakeup submission; the consumer is woken
 * only when `wakeup_bytes` are waiting and otherwise polls.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tether.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EPERM 1
#define SIGKILL 9
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_RAW 3
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define S_ISUID 04000
#define S_ISGID 02000
#define FMODE_WRITE 0x2

/* x86_64 syscall numbers of interest */
#define NR_open 2
#define NR_dup2 33
#define NR_socket 41
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_bind 49
#define NR_listen 50
#define NR_link 86
#define NR_symlink 88
#define NR_chmod 90
#define NR_fchmod 91
#define NR_ptrace 101
#define NR_mount 165
#define NR_init_module 175
#define NR_openat 257
#define NR_linkat 265
#define NR_symlinkat 266
#define NR_fchmodat 268
#define NR_unshare 272
#define NR_accept4 288
#define NR_dup3 292
#define NR_setns 308
#define NR_finit_module 313
#define NR_memfd_create 319
#define NR_bpf 321
#define NR_execveat 322
#define NR_openat2 437
#define NR_fchmodat2 452

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TETHER_C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tether_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

/* hash of the object whose links are pinned: a restart of the same build re-adopts them */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} build_info SEC(".maps");

/* cgroup id -> 1: cgroups whose syscalls are reported and enforced */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} watched_cgroups SEC(".maps");

/* (cgroup id or 0, comm) -> rule: binaries killed at exec */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tether_deny_key);
	__type(value, struct tether_deny_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny_exec SEC(".maps");

/* cgroup id -> rule: isolated cgroups, every connect/sendmsg refused */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} isolated_cgrps SEC(".maps");

/* path prefixes whose read-only opens are reported too (sensitive files) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sensitive_paths SEC(".maps");

/* path prefixes whose write-opens are refused (LSM file_open only) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny_write SEC(".maps");

/* the write-open prefilter, compiled from the rules: absolute paths with one of these
 * prefixes (write_prefixes) or suffixes (write_suffixes, keyed by the reversed path) are
 * reported; the others are counted as filtered */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} write_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct tether_path_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} write_suffixes SEC(".maps");

/* tgid -> session tag; children inherit it at fork */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} session_tags SEC(".maps");

struct pending {
	__u32 nr;
	__u32 _pad;
	__u64 args[6];
};

/* pid_tgid -> syscall arguments between sys_enter and sys_exit */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pending);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pending_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct tether_path_key);
} scratch_key SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct tether_config *cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings, &zero);
}

static __always_inline int is_watched(__u64 cg)
{
	struct tether_config *c = cfg();
	if (c && c->all_cgroups)
		return 1;
	return bpf_map_lookup_elem(&watched_cgroups, &cg) != NULL;
}

static __always_inline int is_self(__u32 tgid)
{
	struct tether_config *c = cfg();
	return c && c->self_tgid == tgid;
}

static __always_inline __u64 wakeup_flag(void)
{
	struct tether_config *c = cfg();
	__u64 limit = c ? c->wakeup_bytes : 0;
	if (limit == 0 || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= limit)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline __u32 tty_nr(struct task_struct *t)
{
	struct tty_struct *tty = BPF_CORE_READ(t, signal, tty);
	if (!tty)
		return 0;
	__u32 major = BPF_CORE_READ(tty, driver, major);
	__u32 minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

static __always_inline void fill_hdr(struct tether_hdr *h, __u32 kind, struct task_struct *t,
				     __u64 cg)
{
	__u64 ids = bpf_get_current_uid_gid();
	h->kind = kind;
	h->flags = 0;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = cg;
	h->pid = BPF_CORE_READ(t, tgid);
	h->tid = BPF_CORE_READ(t, pid);
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = BPF_CORE_READ(t, cred, uid.val);
	h->gid = BPF_CORE_READ(t, cred, gid.val);
	(void)ids;
	if (bpf_core_field_exists(t->loginuid))
		h->loginuid = BPF_CORE_READ(t, loginuid.val);
	else
		h->loginuid = (__u32)-1;
	h->tty = tty_nr(t);
	h->_pad0 = 0;
	__u64 *tag = bpf_map_lookup_elem(&session_tags, &h->pid);
	h->session = tag ? *tag : 0;
	BPF_CORE_READ_STR_INTO(&h->comm, t, comm);
}

/* ---- process lifecycle ---------------------------------------------------------------- */

static __always_inline int on_exec(struct task_struct *p, struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 tgid = BPF_CORE_READ(p, tgid);
	__u32 flags = 0;
	__u32 rule = 0;

	if (is_watched(cg)) {
		flags |= TETHER_F_WATCHED;
		/* enforcement first: it must hold even when the ring buffer is full */
		struct tether_deny_key key = { .cgroup_id = cg };
		BPF_CORE_READ_STR_INTO(&key.comm, p, comm);
		struct tether_deny_val *d = bpf_map_lookup_elem(&deny_exec, &key);
		if (!d) {
			key.cgroup_id = 0;
			d = bpf_map_lookup_elem(&deny_exec, &key);
		}
		if (d && (d->action & TETHER_DENY_KILL) && !is_self(tgid)) {
			rule = d->rule_id;
			if (bpf_send_signal(SIGKILL) == 0) {
				flags |= TETHER_F_KILLED;
				count(TETHER_C_EXEC_KILLED);
			} else {
				flags |= TETHER_F_KILL_FAILED;
			}
		}
	}

	struct tether_exec *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_EXEC, p, cg);
	e->hdr.flags = flags;
	e->deny_rule = rule;
	e->_pad0 = 0;
	e->start_boot_ns = BPF_CORE_READ(p, start_boottime);
	const char *fname = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), fname);
	e->filename_len = n > 0 ? n - 1 : 0;

	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	if (len > TETHER_ARGS_LEN - 1) {
		len = TETHER_ARGS_LEN - 1;
		e->hdr.flags |= TETHER_F_ARGS_TRUNC;
	}
	len &= (TETHER_ARGS_LEN - 1);
	if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	else
		e->args_len = 0;
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tether_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u32 child_pid = BPF_CORE_READ(child, pid);
	if (child_tgid != child_pid)
		return 0; /* a new thread, not a new process */
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u64 *tag = bpf_map_lookup_elem(&session_tags, &ptgid);
	if (tag) {
		__u64 t = *tag;
		bpf_map_update_elem(&session_tags, &child_tgid, &t, BPF_ANY);
	}
	struct tether_fork *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_FORK, parent, bpf_get_current_cgroup_id());
	e->child_pid = child_tgid;
	e->_pad0 = 0;
	e->start_boot_ns = BPF_CORE_READ(child, start_boottime);
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tether_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

static __always_inline int on_exit(struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (tgid != BPF_CORE_READ(p, pid))
		return 0; /* a thread, the process lives on */
	struct tether_exit *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		bpf_map_delete_elem(&session_tags, &tgid);
		return 0;
	}
	fill_hdr(&e->hdr, TETHER_EV_EXIT, p, bpf_get_current_cgroup_id());
	e->exit_code = BPF_CORE_READ(p, exit_code);
	e->_pad0 = 0;
	bpf_map_delete_elem(&session_tags, &tgid);
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tether_exit, struct task_struct *p)
{
	return on_exit(p);
}

/* New cgroup v2 directories below a watched one, or named kubepods*, are watched at once,
 * before the container's first process runs. */
static __always_inline int on_cgroup_mkdir(struct cgroup *cgrp)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0; /* not the v2 hierarchy */
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u64 parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	__u8 one = 1;
	if (bpf_map_lookup_elem(&watched_cgroups, &parent)) {
		bpf_map_update_elem(&watched_cgroups, &id, &one, BPF_ANY);
		return 0;
	}
	char name[9] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(cgrp, kn, name));
	if (name[0] == 'k' && name[1] == 'u' && name[2] == 'b' && name[3] == 'e' &&
	    name[4] == 'p' && name[5] == 'o' && name[6] == 'd' && name[7] == 's')
		bpf_map_update_elem(&watched_cgroups, &id, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(tether_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return on_cgroup_mkdir(cgrp);
}

/* ---- syscalls of interest ------------------------------------------------------------- */

static __always_inline int interesting(long nr)
{
	switch (nr) {
	case NR_open: case NR_openat: case NR_openat2:
	case NR_connect: case NR_accept: case NR_accept4: case NR_listen: case NR_bind:
	case NR_sendto: case NR_socket: case NR_ptrace: case NR_setns: case NR_unshare:
	case NR_mount: case NR_init_module: case NR_finit_module: case NR_bpf:
	case NR_chmod: case NR_fchmod: case NR_fchmodat: case NR_fchmodat2:
	case NR_memfd_create: case NR_execveat: case NR_symlink: case NR_symlinkat:
	case NR_link: case NR_linkat: case NR_dup2: case NR_dup3:
		return 1;
	}
	return 0;
}

static __always_inline int sensitive_path(const char *upath)
{
	__u32 zero = 0;
	struct tether_path_key *k = bpf_map_lookup_elem(&scratch_key, &zero);
	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->path, sizeof(k->path), upath);
	if (n <= 1)
		return 0;
	k->prefixlen = (n - 1) * 8;
	return bpf_map_lookup_elem(&sensitive_paths, k) != NULL;
}

/* 1 when a write-open of this path must reach user space: the prefilter is off, or the path
 * is relative (resolved in user space), empty, unreadable, longer than a key or has a `../`,
 * or it has one of the rules' prefixes or suffixes */
static __always_inline int write_wanted(const char *upath)
{
	struct tether_config *c = cfg();
	if (!c || !c->write_filter)
		return 1;
	__u32 zero = 0, one = 1;
	struct tether_path_key *k = bpf_map_lookup_elem(&scratch_key, &zero);
	struct tether_path_key *r = bpf_map_lookup_elem(&scratch_key, &one);
	if (!k || !r)
		return 1;
	long n = bpf_probe_read_user_str(k->path, sizeof(k->path), upath);
	if (n <= 1 || n >= (long)sizeof(k->path))
		return 1;
	if (k->path[0] != '/')
		return 1;
	long len = n - 1;
	k->prefixlen = len * 8;
	if (bpf_map_lookup_elem(&write_prefixes, k))
		return 1;
	for (int i = 0; i < (int)sizeof(r->path); i++) {
		if (i >= len)
			break;
		r->path[i] = k->path[(len - 1 - i) & (sizeof(k->path) - 1)];
	}
	r->prefixlen = len * 8;
	if (bpf_map_lookup_elem(&write_suffixes, r))
		return 1;
	/* a `../` makes the written path differ from its prefix: report it */
	for (int i = 0; i < (int)sizeof(k->path) - 2; i++) {
		if (i + 2 >= len)
			break;
		if (k->path[i] == '.' && k->path[i + 1] == '.' && k->path[i + 2] == '/')
			return 1;
	}
	return 0;
}

static __always_inline __u16 user_family(const void *uaddr)
{
	__u16 fam = 0;
	if (uaddr)
		bpf_probe_read_user(&fam, sizeof(fam), uaddr);
	return fam;
}

/* the in-kernel filter: 1 when the call should reach user space */
static __always_inline int keep_call(long nr, __u64 *a)
{
	switch (nr) {
	case NR_open:
		if ((a[1] & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) &&
		    write_wanted((const char *)a[0]))
			return 1;
		return sensitive_path((const char *)a[0]);
	case NR_openat:
		if ((a[2] & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) &&
		    write_wanted((const char *)a[1]))
			return 1;
		return sensitive_path((const char *)a[1]);
	case NR_openat2: {
		__u64 flags = 0;
		bpf_probe_read_user(&flags, sizeof(flags), (void *)a[2]); /* open_how.flags */
		a[2] = flags; /* report the flags as openat does */
		if ((flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) &&
		    write_wanted((const char *)a[1]))
			return 1;
		return sensitive_path((const char *)a[1]);
	}
	case NR_connect:
	case NR_bind: {
		__u16 fam = user_family((void *)a[1]);
		return fam == AF_INET || fam == AF_INET6;
	}
	case NR_sendto: {
		if (!a[4])
			return 0; /* connected socket: the connect was reported */
		__u16 fam = user_family((void *)a[4]);
		return fam == AF_INET || fam == AF_INET6;
	}
	case NR_socket:
		return a[0] == AF_PACKET || (a[1] & 0xf) == SOCK_RAW;
	case NR_ptrace:
		/* PTRACE_TRACEME, PEEK/POKE text/data/user, ATTACH, SEIZE */
		return a[0] == 0 || (a[0] >= 1 && a[0] <= 6) || a[0] == 16 || a[0] == 0x4206;
	case NR_chmod:
	case NR_fchmod:
		return (a[1] & (S_ISUID | S_ISGID)) != 0;
	case NR_fchmodat:
	case NR_fchmodat2:
		return (a[2] & (S_ISUID | S_ISGID)) != 0;
	case NR_dup2:
	case NR_dup3:
		return a[1] <= 2; /* redirection of stdin/stdout/stderr */
	}
	return 1;
}

static __always_inline int on_sys_enter(struct pt_regs *regs, long nr)
{
	if (!interesting(nr))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (is_self(id >> 32))
		return 0;
	if (!is_watched(bpf_get_current_cgroup_id())) {
		count(TETHER_C_FILTERED);
		return 0;
	}
	struct pending p = { .nr = nr };
	p.args[0] = BPF_CORE_READ(regs, di);
	p.args[1] = BPF_CORE_READ(regs, si);
	p.args[2] = BPF_CORE_READ(regs, dx);
	p.args[3] = BPF_CORE_READ(regs, r10);
	p.args[4] = BPF_CORE_READ(regs, r8);
	p.args[5] = BPF_CORE_READ(regs, r9);
	if (!keep_call(nr, p.args)) {
		count(TETHER_C_FILTERED);
		return 0;
	}
	if (bpf_map_update_elem(&pending_calls, &id, &p, BPF_ANY) != 0)
		count(TETHER_C_PENDING_FULL);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(tether_sys_enter, struct pt_regs *regs, long id)
{
	return on_sys_enter(regs, id);
}

static __always_inline __u32 read_ustr(char *dst, const void *src)
{
	if (!src)
		return 0;
	long n = bpf_probe_read_user_str(dst, TETHER_PATH_LEN, src);
	return n > 0 ? n - 1 : 0;
}

static __always_inline __u32 read_uaddr(__u8 *dst, const void *src, __u64 len)
{
	if (!src)
		return 0;
	if (len > TETHER_ADDR_LEN)
		len = TETHER_ADDR_LEN;
	len &= 0x1f;
	if (len == 0 || bpf_probe_read_user(dst, len, src) != 0)
		return 0;
	return len;
}

static __always_inline int on_sys_exit(struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending_calls, &id);
	if (!p)
		return 0;
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (p->nr != nr) {
		bpf_map_delete_elem(&pending_calls, &id);
		return 0;
	}
	struct tether_syscall *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		bpf_map_delete_elem(&pending_calls, &id);
		return 0;
	}
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	fill_hdr(&e->hdr, TETHER_EV_SYSCALL, t, bpf_get_current_cgroup_id());
	e->hdr.flags |= TETHER_F_WATCHED;
	e->res = ret;
	e->nr = nr;
	e->_pad0 = 0;
	e->path_len = 0;
	e->path2_len = 0;
	e->addr_len = 0;
	e->path[0] = 0;
	e->path2[0] = 0;
	for (int i = 0; i < 6; i++)
		e->args[i] = p->args[i];
	__u64 *a = e->args;
	switch (nr) {
	case NR_open: case NR_chmod: case NR_memfd_create:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		break;
	case NR_openat: case NR_openat2: case NR_fchmodat: case NR_fchmodat2: case NR_execveat:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		break;
	case NR_symlink: case NR_link: case NR_mount:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		e->path2_len = read_ustr(e->path2, (void *)a[1]);
		break;
	case NR_symlinkat:
		e->path_len = read_ustr(e->path, (void *)a[0]);
		e->path2_len = read_ustr(e->path2, (void *)a[2]);
		break;
	case NR_linkat:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		e->path2_len = read_ustr(e->path2, (void *)a[3]);
		break;
	case NR_init_module:
		e->path_len = read_ustr(e->path, (void *)a[2]);
		break;
	case NR_finit_module:
		e->path_len = read_ustr(e->path, (void *)a[1]);
		break;
	case NR_connect: case NR_bind:
		e->addr_len = read_uaddr(e->addr, (void *)a[1], a[2]);
		break;
	case NR_sendto:
		e->addr_len = read_uaddr(e->addr, (void *)a[4], a[5]);
		break;
	case NR_accept: case NR_accept4:
		if (ret >= 0 && a[1] && a[2]) {
			__u32 alen = 0;
			bpf_probe_read_user(&alen, sizeof(alen), (void *)a[2]);
			e->addr_len = read_uaddr(e->addr, (void *)a[1], alen);
		}
		break;
	}
	bpf_map_delete_elem(&pending_calls, &id);
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("raw_tp/sys_exit")
int BPF_PROG(tether_sys_exit, struct pt_regs *regs, long ret)
{
	return on_sys_exit(regs, ret);
}

/* ---- network isolation (cgroup sock_addr) ---------------------------------------------- */

static __always_inline int net_verdict(struct bpf_sock_addr *ctx, const int v6)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&isolated_cgrps, &cg))
		return 1;
	count(TETHER_C_NET_DENIED);
	struct tether_net_denied *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TETHER_C_LOST);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();
	__builtin_memset(&e->hdr, 0, sizeof(e->hdr));
	e->hdr.kind = TETHER_EV_NET_DENIED;
	e->hdr.flags = TETHER_F_WATCHED;
	e->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	e->hdr.cgroup_id = cg;
	e->hdr.pid = id >> 32;
	e->hdr.tid = (__u32)id;
	e->hdr.uid = (__u32)ug;
	e->hdr.gid = ug >> 32;
	e->hdr.loginuid = (__u32)-1;
	bpf_get_current_comm(&e->hdr.comm, sizeof(e->hdr.comm));
	e->family = ctx->user_family;
	e->port = bpf_ntohs((__u16)ctx->user_port);
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (!v6) {
		__u32 ip4 = ctx->user_ip4;
		__builtin_memcpy(e->addr, &ip4, 4);
	} else {
		__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
		__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
		__builtin_memcpy(e->addr, &w0, 4);
		__builtin_memcpy(e->addr + 4, &w1, 4);
		__builtin_memcpy(e->addr + 8, &w2, 4);
		__builtin_memcpy(e->addr + 12, &w3, 4);
	}
	count(TETHER_C_EMITTED);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("cgroup/connect4")
int tether_connect4(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 0); }

SEC("cgroup/connect6")
int tether_connect6(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 1); }

SEC("cgroup/sendmsg4")
int tether_sendmsg4(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 0); }

SEC("cgroup/sendmsg6")
int tether_sendmsg6(struct bpf_sock_addr *ctx) { return net_verdict(ctx, 1); }

/* ---- BPF LSM (loaded only where the kernel accepts LSM programs) ----------------------- */

static __always_inline int lsm_exec_verdict(struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_watched(cg))
		return 0;
	char path[TETHER_PATH_LEN];
	long n = bpf_probe_read_kernel_str(path, sizeof(path), BPF_CORE_READ(bprm, filename));
	if (n <= 0)
		return 0;
	/* basename, truncated like the task comm */
	int base = 0;
	for (int i = 0; i < TETHER_PATH_LEN; i++) {
		if (i >= n)
			break;
		if (path[i] == '/')
			base = i + 1;
	}
	struct tether_deny_key key = { .cgroup_id = cg };
	for (int i = 0; i < TETHER_COMM_LEN - 1; i++) {
		int j = (base + i) & (TETHER_PATH_LEN - 1);
		if (base + i >= n)
			break;
		key.comm[i] = path[j];
		if (!path[j])
			break;
	}
	struct tether_deny_val *d = bpf_map_lookup_elem(&deny_exec, &key);
	if (!d) {
		key.cgroup_id = 0;
		d = bpf_map_lookup_elem(&deny_exec, &key);
	}
	if (d && (d->action & TETHER_DENY_KILL)) {
		count(TETHER_C_EXEC_KILLED);
		return -EPERM;
	}
	return 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(tether_lsm_exec, struct linux_binprm *bprm, int ret)
{
	if (ret != 0)
		return ret;
	return lsm_exec_verdict(bprm);
}

static __always_inline int lsm_open_verdict(struct file *file)
{
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return 0;
	if (!is_watched(bpf_get_current_cgroup_id()))
		return 0;
	__u32 zero = 0;
	struct tether_path_key *k = bpf_map_lookup_elem(&scratch_key, &zero);
	if (!k)
		return 0;
	long n = bpf_d_path((struct path *)&file->f_path, k->path, sizeof(k->path));
	if (n <= 1)
		return 0;
	k->prefixlen = (n - 1) * 8;
	if (bpf_map_lookup_elem(&deny_write, k))
		return -EPERM;
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(tether_lsm_file_open, struct file *file, int ret)
{
	if (ret != 0)
		return ret;
	return lsm_open_verdict(file);
}
