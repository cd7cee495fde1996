/*
 * aether-shim: how aetherd starts processes that outlive it.
 *
 * Why a separate parent: a process whose parent dies is re-parented to init, and its exit status
 * goes with it. aetherd must be restartable (kill -9 included) without losing what it runs, so each
 * executable gets a small shim as its parent, in its own session: the shim starts the program,
 * copies its stdout/stderr into capped log files, and records how it ended in exit.json. A restarted
 * aetherd re-adopts the program from started.json and learns its end from exit.json.
 *
 * Why a spawner: forking costs in proportion to the parent's memory, and aetherd is a JavaScript
 * runtime of ~80 MiB. So aetherd starts this binary once as `aether-shim --spawner` and sends it one
 * request per executable; the spawner (a few hundred KiB) forks a shim per request. Shims inherit
 * the spawner's stdout, a pipe to aetherd, and report on it in single lines (atomic under PIPE_BUF):
 *   "started ID PID STARTTIME"  once the program has been exec'd (STARTTIME: /proc/PID/stat field 22)
 *   "error ID ERRNO MESSAGE"    when it could not be started
 *   "exited ID"                 after exit.json has been written
 * The spawner exits when its stdin closes (aetherd gone); shims it started keep running.
 *
 * Request on stdin: a decimal byte count and '\n', then that many bytes of NUL-terminated fields:
 *   id, dir, cap_bytes, cwd, uid (-1: keep), gid (-1: keep), n_cgroup_files, cgroup_file...,
 *   ns_holder_pid (0: none), ns_join ("net,uts,ipc,mnt" or ""), new_pid_ns (0, 1: as pid 1, 2: under an init),
 *   argc, argv..., envc, env...
 *
 * `aether-shim --hold NAMESPACES [--join PID] [--hostname NAME]` is the other mode: it creates the
 * namespaces of an isolated cell (net,uts,ipc,mnt; after joining those of PID, the parent cell's
 * holder), says "held" on stdout, and sleeps for the cell's whole life, keeping them alive.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>
#include <sched.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int sigchld_pipe[2] = {-1, -1};

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  ssize_t ignored = write(sigchld_pipe[1], "c", 1);
  (void)ignored;
  errno = saved;
}

/* Writes a whole file atomically: a temporary name, then rename, so aetherd never reads half a file.
   No fsync: these files matter while the host is up (an aetherd crash or restart); after a power
   loss the process they describe is gone as well, and skipping it keeps a start at ~1 ms. */
static int write_atomic(const char *dir, const char *name, const char *content) {
  char tmp[4096], final[4096];
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
  snprintf(final, sizeof final, "%s/%s", dir, name);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return -1;
  size_t len = strlen(content), off = 0;
  while (off < len) {
    ssize_t n = write(fd, content + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      close(fd);
      return -1;
    }
    off += (size_t)n;
  }
  close(fd);
  return rename(tmp, final);
}

/* Field 22 of /proc/PID/stat: start time in clock ticks since boot; with the pid, a unique identity. */
static unsigned long long read_start_time(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
  if (!p) return 0;
  p += 2; /* field 3 (state) */
  for (int field = 3; field < 22 && *p; field++) {
    p = strchr(p, ' ');
    if (!p) return 0;
    p++;
  }
  return strtoull(p, NULL, 10);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct capture {
  int from;           /* read end of the pipe from the program */
  int to;             /* the log file */
  uint64_t written;   /* bytes in the log file */
  uint64_t dropped;   /* bytes past the cap */
};

/* Moves what is readable from the pipe into the log file.
   Returns 1 after moving data, -1 when nothing is readable right now, 0 at end of file. */
static int pump(struct capture *c, uint64_t cap) {
  char buf[65536];
  ssize_t n = read(c->from, buf, sizeof buf);
  if (n < 0) return (errno == EINTR || errno == EAGAIN) ? -1 : 0;
  if (n == 0) return 0;
  uint64_t room = c->written < cap ? cap - c->written : 0;
  uint64_t keep = (uint64_t)n < room ? (uint64_t)n : room;
  uint64_t off = 0;
  while (off < keep) {
    ssize_t w = write(c->to, buf + off, keep - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      break; /* a full disk must not kill the program: count the rest as dropped */
    }
    off += (uint64_t)w;
  }
  c->written += off;
  c->dropped += (uint64_t)n - off;
  return 1;
}

struct request {
  const char *id, *dir, *cwd;
  long long cap, uid, gid;
  int n_cgroup;
  char **cgroup_files;
  long long ns_holder;    /* pid whose namespaces the program joins; 0: none */
  const char *ns_join;    /* which of them: comma-separated among net,uts,ipc,mnt */
  int new_pid_ns;         /* 1: the program is pid 1 of a pid namespace of its own; 2: with an init as pid 1 */
  char **argv;
  char **envp;
};

static pid_t pid1_child = 0;

/* The stand-in parent of a pid-isolated program passes on every signal it gets. */
static void forward_signal(int sig) {
  if (pid1_child > 0) kill(pid1_child, sig);
}

/* Joins the namespaces of a holder process ("net,uts,ipc,mnt"); returns 0 or -1 with errno. */
static int join_namespaces(long long holder, const char *which) {
  char list[64];
  snprintf(list, sizeof list, "%s", which);
  for (char *save = NULL, *ns = strtok_r(list, ",", &save); ns; ns = strtok_r(NULL, ",", &save)) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%lld/ns/%s", holder, ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = setns(fd, 0);
    int err = errno;
    close(fd);
    if (rc != 0) {
      errno = err;
      return -1;
    }
  }
  return 0;
}

/* Waits for `child`, reaping every other child meanwhile (a pid 1 inherits the orphans of its
   namespace), then exits the way it ended: with its code, or with its signal (outside a namespace),
   or with 128+signal (as pid 1, which cannot die of a signal it sends itself). */
static void exit_like(pid_t child, int as_pid1) {
  int status = 0;
  for (;;) {
    int st;
    pid_t got = waitpid(-1, &st, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      break; /* no children left */
    }
    if (got == child) {
      status = st;
      break;
    }
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    if (as_pid1) _exit(128 + sig);
    signal(sig, SIG_DFL);
    sigset_t all;
    sigemptyset(&all);
    sigaddset(&all, sig);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
  }
  _exit(WEXITSTATUS(status));
}

static void forward_signals_to(pid_t child) {
  pid1_child = child;
  struct sigaction fwd;
  memset(&fwd, 0, sizeof fwd);
  fwd.sa_handler = forward_signal;
  int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &fwd, NULL);
}

/* Makes this process pid 1 of a new pid namespace, with /proc to match. The calling process stays
   outside as a stand-in parent: it forwards signals and exits the way pid 1 exits, so the shim
   sees the program's status. With `with_init` (tenant processes), pid 1 is a minimal init rather
   than the program: it forwards signals to the program and reaps orphans, so the program gets
   SIGTERM like any process (the kernel drops signals to a pid 1 that has no handler for them).
   Returns only in the process that goes on to exec the program (0), or on failure (-1 with errno). */
static int become_pid1(int exec_status_fd, int with_init) {
  if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) return -1;
  pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) return -1;
    if (!with_init) return 0;
    pid_t program = fork();
    if (program < 0) return -1;
    if (program == 0) return 0;
    forward_signals_to(program);
    close(exec_status_fd);
    close(STDOUT_FILENO);
    close(STDERR_FILENO);
    exit_like(program, 1);
  }
  forward_signals_to(child);
  /* Only the program holds the output and exec-status pipes from here on: the shim learns that the
     exec happened when the last write end of the exec-status pipe closes. */
  close(exec_status_fd);
  close(STDOUT_FILENO);
  close(STDERR_FILENO);
  exit_like(child, 0);
  return -1; /* not reached */
}

/* Sends one report line to aetherd in a single write, so concurrent shims never interleave. */
static void report(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  if (n >= (int)sizeof line) {
    n = (int)sizeof line - 1;
    line[n - 1] = '\n';
  }
  ssize_t ignored = write(STDOUT_FILENO, line, (size_t)n); /* EAGAIN/EPIPE: aetherd polls as well */
  (void)ignored;
}

static void fail_start(const struct request *r, const char *what, int err) {
  report("error %s %d %s: %s\n", r->id, err, what, strerror(err));
  _exit(1);
}

/* The shim: runs in its own session, starts the program, captures its output, records its end. */
static void run_shim(const struct request *r) {
  setsid();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);

  char path[4096];
  snprintf(path, sizeof path, "%s/stdout.log", r->dir);
  int out_log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  snprintf(path, sizeof path, "%s/stderr.log", r->dir);
  int err_log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (out_log < 0 || err_log < 0) fail_start(r, "opening the log files", errno);

  int out_pipe[2], err_pipe[2], exec_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC) || pipe2(exec_pipe, O_CLOEXEC) ||
      pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK))
    fail_start(r, "creating pipes", errno);

  /* Replaces the spawner's SIG_IGN (auto-reaping), which would otherwise lose the exit status. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  pid_t pid = fork();
  if (pid < 0) fail_start(r, "fork", errno);
  if (pid == 0) {
    /* The program: its own process group (so a stop reaches its children), its cell, its ids. */
    const char *step = "setpgid";
    int devnull;
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    if (setpgid(0, 0) != 0) goto fail;
    step = "joining the cell";
    for (int k = 0; k < r->n_cgroup; k++) {
      int fd = open(r->cgroup_files[k], O_WRONLY | O_CLOEXEC);
      if (fd < 0) goto fail;
      char pidbuf[32];
      int len = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int)getpid());
      if (write(fd, pidbuf, (size_t)len) != len) {
        close(fd);
        goto fail;
      }
      close(fd);
    }
    step = "redirecting output";
    devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0) goto fail;
    step = "joining the cell's namespaces";
    if (r->ns_holder > 0 && r->ns_join[0] != '\0' && join_namespaces(r->ns_holder, r->ns_join) != 0) goto fail;
    step = "creating the pid namespace";
    if (r->new_pid_ns) {
      if (become_pid1(exec_pipe[1], r->new_pid_ns == 2) != 0) goto fail;
    }
    step = "setting the group id";
    if (r->gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)r->gid) != 0)) goto fail;
    step = "setting the user id";
    if (r->uid >= 0 && setuid((uid_t)r->uid) != 0) goto fail;
    step = "changing to the working directory";
    if (chdir(r->cwd) != 0) goto fail;
    step = "executing the program";
    execve(r->argv[0], r->argv, r->envp);
  fail:;
    int err = errno;
    dprintf(exec_pipe[1], "%d %s", err, step);
    _exit(127);
  }

  close(out_pipe[1]);
  close(err_pipe[1]);
  close(exec_pipe[1]);
  char failure[512];
  ssize_t n;
  do n = read(exec_pipe[0], failure, sizeof failure - 1);
  while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n > 0) {
    failure[n] = 0;
    int err = atoi(failure);
    const char *step = strchr(failure, ' ');
    waitpid(pid, NULL, 0);
    report("error %s %d %s: %s\n", r->id, err, step ? step + 1 : "starting", strerror(err));
    _exit(1);
  }

  unsigned long long start_time = read_start_time(pid);
  char doc[512];
  snprintf(doc, sizeof doc, "{\"pid\":%d,\"startTime\":\"%llu\",\"shimPid\":%d,\"shimStartTime\":\"%llu\",\"timeMs\":%lld}\n",
           (int)pid, start_time, (int)getpid(), read_start_time(getpid()), now_ms());
  if (write_atomic(r->dir, "started.json", doc) != 0) {
    int err = errno;
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_start(r, "recording the started process", err);
  }
  report("started %s %d %llu\n", r->id, (int)pid, start_time);

  struct capture out = {out_pipe[0], out_log, 0, 0}, err = {err_pipe[0], err_log, 0, 0};
  uint64_t cap = (uint64_t)r->cap;
  struct stat st;
  if (fstat(out_log, &st) == 0) out.written = (uint64_t)st.st_size;
  if (fstat(err_log, &st) == 0) err.written = (uint64_t)st.st_size;
  int out_open = 1, err_open = 1, status = 0, exited = 0;
  while (!exited) {
    struct pollfd fds[3] = {
        {out_open ? out.from : -1, POLLIN, 0},
        {err_open ? err.from : -1, POLLIN, 0},
        {sigchld_pipe[0], POLLIN, 0},
    };
    if (poll(fds, 3, 1000) < 0 && errno != EINTR) break;
    if (out_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) out_open = pump(&out, cap) != 0;
    if (err_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) err_open = pump(&err, cap) != 0;
    if (fds[2].revents & POLLIN) {
      char drain[64];
      while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {}
    }
    if (waitpid(pid, &status, WNOHANG) == pid) exited = 1;
  }
  /* The program is gone; take what it wrote last. Children it left behind may hold the pipes open,
     so read without blocking instead of waiting for end of file. */
  fcntl(out.from, F_SETFL, O_NONBLOCK);
  fcntl(err.from, F_SETFL, O_NONBLOCK);
  while (out_open && pump(&out, cap) == 1) {}
  while (err_open && pump(&err, cap) == 1) {}

  unsigned long long dropped = (unsigned long long)(out.dropped + err.dropped);
  if (WIFEXITED(status))
    snprintf(doc, sizeof doc, "{\"exitCode\":%d,\"signal\":0,\"timeMs\":%lld,\"droppedBytes\":%llu}\n",
             WEXITSTATUS(status), now_ms(), dropped);
  else
    snprintf(doc, sizeof doc, "{\"exitCode\":null,\"signal\":%d,\"timeMs\":%lld,\"droppedBytes\":%llu}\n",
             WIFSIGNALED(status) ? WTERMSIG(status) : 0, now_ms(), dropped);
  write_atomic(r->dir, "exit.json", doc);
  report("exited %s\n", r->id);
  _exit(0);
}

/* Iterates over the NUL-terminated fields of a request payload. */
struct fields {
  char *p, *end;
};

static char *next_field(struct fields *f) {
  if (f->p >= f->end) return NULL;
  char *field = f->p;
  f->p += strlen(field) + 1;
  return field;
}

static char **field_list(struct fields *f, long long count) {
  if (count < 0 || count > 1 << 20) return NULL;
  char **list = calloc((size_t)count + 1, sizeof *list);
  if (!list) return NULL;
  for (long long i = 0; i < count; i++)
    if (!(list[i] = next_field(f))) return NULL;
  return list;
}

/* Splits a request payload into its fields; returns 0 when it is well formed. */
static int parse_request(char *buf, size_t len, struct request *r) {
  if (len == 0 || buf[len - 1] != '\0') return -1;
  struct fields f = {buf, buf + len};
  char *cap, *uid, *gid, *count;
  if (!(r->id = next_field(&f)) || !(r->dir = next_field(&f)) || !(cap = next_field(&f)) || !(r->cwd = next_field(&f)) ||
      !(uid = next_field(&f)) || !(gid = next_field(&f)) || !(count = next_field(&f)))
    return -1;
  r->cap = atoll(cap);
  r->uid = atoll(uid);
  r->gid = atoll(gid);
  r->n_cgroup = atoi(count);
  if (!(r->cgroup_files = field_list(&f, r->n_cgroup))) return -1;
  char *holder, *pidns;
  if (!(holder = next_field(&f)) || !(r->ns_join = next_field(&f)) || !(pidns = next_field(&f))) return -1;
  r->ns_holder = atoll(holder);
  r->new_pid_ns = atoi(pidns);
  if (!(count = next_field(&f)) || atoll(count) < 1 || !(r->argv = field_list(&f, atoll(count)))) return -1;
  if (!(count = next_field(&f)) || !(r->envp = field_list(&f, atoll(count)))) return -1;
  return 0;
}

/* Reads requests until stdin closes and forks a shim for each. */
static int spawner(void) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGCHLD, SIG_IGN); /* shims are reaped automatically; their status is reported by themselves */
  /* A full pipe must never block a shim's report: aetherd also polls, so a lost line only delays. */
  fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
  char header[32];
  while (fgets(header, sizeof header, stdin)) {
    size_t len = strtoul(header, NULL, 10);
    if (len == 0 || len > 64u << 20) {
      report("error - %d malformed request header\n", EINVAL);
      return 1;
    }
    char *buf = malloc(len);
    if (!buf || fread(buf, 1, len, stdin) != len) return 1;
    struct request r;
    memset(&r, 0, sizeof r);
    if (parse_request(buf, len, &r) != 0) {
      report("error %s %d malformed request\n", r.id ? r.id : "-", EINVAL);
      free(buf);
      continue;
    }
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_RDONLY);
      if (devnull >= 0) dup2(devnull, STDIN_FILENO);
      run_shim(&r);
    }
    if (pid < 0) report("error %s %d fork: %s\n", r.id, errno, strerror(errno));
    free(r.cgroup_files);
    free(r.argv);
    free(r.envp);
    free(buf);
  }
  return 0;
}

/* Brings the loopback interface of a fresh network namespace up. */
static int loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
  }
  close(fd);
  return rc;
}

/* --hold: creates and keeps a cell's namespaces. */
static int hold(int argc, char **argv) {
  const char *which = argv[2], *join = NULL, *hostname = NULL;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--join") == 0) join = argv[i + 1];
    else if (strcmp(argv[i], "--hostname") == 0) hostname = argv[i + 1];
  }
  setsid();
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  if (join && join_namespaces(atoll(join), "net,uts,ipc,mnt") != 0) {
    printf("error %d joining the parent cell's namespaces: %s\n", errno, strerror(errno));
    return 1;
  }
  int flags = 0;
  if (strstr(which, "net")) flags |= CLONE_NEWNET;
  if (strstr(which, "uts")) flags |= CLONE_NEWUTS;
  if (strstr(which, "ipc")) flags |= CLONE_NEWIPC;
  if (strstr(which, "mnt")) flags |= CLONE_NEWNS;
  if (flags && unshare(flags) != 0) {
    printf("error %d creating namespaces: %s\n", errno, strerror(errno));
    return 1;
  }
  if ((flags & CLONE_NEWNS) && mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    printf("error %d making mounts private: %s\n", errno, strerror(errno));
    return 1;
  }
  if ((flags & CLONE_NEWNET) && loopback_up() != 0) {
    printf("error %d bringing up the loopback interface: %s\n", errno, strerror(errno));
    return 1;
  }
  if ((flags & CLONE_NEWUTS) && hostname && sethostname(hostname, strlen(hostname)) != 0) {
    printf("error %d setting the hostname: %s\n", errno, strerror(errno));
    return 1;
  }
  printf("held\n");
  fflush(stdout);
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
  }
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--spawner") == 0) return spawner();
  if (argc >= 3 && strcmp(argv[1], "--hold") == 0) return hold(argc, argv);
  fprintf(stderr, "usage: aether-shim --spawner | --hold NAMESPACES [--join PID] [--hostname NAME]   (started by aetherd)\n");
  return 2;
}
