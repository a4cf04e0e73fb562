/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The structs shared by the eBPF programs and the user-space loader.
 * Mirrored once in Rust in src/abi.rs (#[repr(C)]); a test there checks sizes and offsets.
 * Only fixed-width types, explicit padding, no bitfields.
 */
#ifndef TETHER_H
#define TETHER_H

#define TETHER_COMM_LEN 16
#define TETHER_PATH_LEN 256
#define TETHER_ARGS_LEN 512
#define TETHER_ADDR_LEN 28 /* sizeof(struct sockaddr_in6) */

/* event kinds (tether_hdr.kind) */
#define TETHER_EV_EXEC 1
#define TETHER_EV_FORK 2
#define TETHER_EV_EXIT 3
#define TETHER_EV_SYSCALL 4
#define TETHER_EV_NET_DENIED 5

/* tether_hdr.flags */
#define TETHER_F_KILLED 1u        /* exec killed by the SIGKILL fallback */
#define TETHER_F_WATCHED 2u       /* the cgroup is watched */
#define TETHER_F_ARGS_TRUNC 4u    /* argv longer than TETHER_ARGS_LEN */
#define TETHER_F_KILL_FAILED 8u   /* bpf_send_signal returned an error */

/* counters (per-CPU array index) */
#define TETHER_C_EMITTED 0
#define TETHER_C_LOST 1
#define TETHER_C_FILTERED 2
#define TETHER_C_EXEC_KILLED 3
#define TETHER_C_NET_DENIED 4
#define TETHER_C_PENDING_FULL 5
#define TETHER_C_COUNT 8

/* deny action bits (tether_deny_val.action) */
#define TETHER_DENY_KILL 1u

struct tether_hdr {
	__u32 kind;
	__u32 flags;
	__u64 ts_boot_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;    /* cgroup v2 id of the task */
	__u64 session;      /* session tag inherited at fork, 0 when none */
	__u32 pid;          /* tgid */
	__u32 tid;
	__u32 ppid;         /* real parent's tgid */
	__u32 uid;
	__u32 gid;
	__u32 loginuid;
	__u32 tty;          /* tty_nr as in /proc/PID/stat, 0 without a terminal */
	__u32 _pad0;
	char comm[TETHER_COMM_LEN];
};

struct tether_exec {
	struct tether_hdr hdr;
	__u64 start_boot_ns;
	__u32 filename_len;
	__u32 args_len;      /* bytes of NUL-separated argv in args */
	__u32 deny_rule;     /* rule id of the deny entry that killed it */
	__u32 _pad0;
	char filename[TETHER_PATH_LEN];
	char args[TETHER_ARGS_LEN];
};

struct tether_fork {
	struct tether_hdr hdr;
	__u32 child_pid;
	__u32 _pad0;
	__u64 start_boot_ns;
};

struct tether_exit {
	struct tether_hdr hdr;
	__s32 exit_code;
	__u32 _pad0;
};

struct tether_syscall {
	struct tether_hdr hdr;
	__s64 res;
	__u32 nr;            /* x86_64 syscall number */
	__u32 path_len;
	__u32 path2_len;
	__u32 addr_len;
	__u64 args[6];
	char path[TETHER_PATH_LEN];
	char path2[TETHER_PATH_LEN];
	__u8 addr[TETHER_ADDR_LEN]; /* struct sockaddr as passed to connect/bind/sendto */
	__u32 _pad0;
};

struct tether_net_denied {
	struct tether_hdr hdr;
	__u32 family;
	__u32 port;          /* host byte order */
	__u8 addr[16];
};

#define TETHER_READ_HEADS 16
#define TETHER_READ_HEADS_OFF 0xffffffffu

struct tether_config {
	__u32 all_cgroups;   /* 1: watch every cgroup, 0: only those in watched_cgroups */
	__u32 self_tgid;     /* the loader, never reported */
	__u64 wakeup_bytes;  /* force a consumer wakeup once this much data is waiting */
	__u32 write_filter;  /* 1: report write-opens only below write_prefixes/write_suffixes */
	/* entries of read_head in use: a read-only open is looked up in sensitive_paths only
	 * when its path's first 8 bytes equal one of them (every sensitive prefix is 8 bytes or
	 * longer); 0: no sensitive prefix; TETHER_READ_HEADS_OFF: look up every path */
	__u32 read_heads;
	__u64 read_head[TETHER_READ_HEADS];
};

struct tether_deny_key {
	__u64 cgroup_id;     /* 0: any watched cgroup */
	char comm[TETHER_COMM_LEN];
};

struct tether_deny_val {
	__u32 rule_id;
	__u32 action;
};

struct tether_path_key {  /* LPM trie key: prefixlen in bits */
	__u32 prefixlen;
	char path[64];
};

#endif
