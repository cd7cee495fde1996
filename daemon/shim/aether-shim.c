/*
 * aether-shim: the parent of exactly one executable started by aetherd.
 *
 * Why a separate parent: a process whose parent dies is re-parented to init, and its exit status
 * goes with it. aetherd must be restartable (kill -9 included) without losing what it runs, so
 * aetherd starts this small shim in its own session; the shim starts the real process, copies its
 * stdout/stderr into capped log files, and records how it ended in exit.json. A restarted aetherd
 * re-adopts the process from started.json and learns its end from exit.json. It is written in C so
 * that it costs about a millisecond and a few hundred KiB, not a JavaScript runtime per process.
 *
 * usage: aether-shim --dir DIR --cap BYTES [--cwd DIR] [--uid N] [--gid N]
 *                    [--cgroup-procs FILE]... -- ARGV0 [ARG]...
 * The executable gets the shim's own environment (aetherd starts the shim with exactly the env the
 * user asked for). Protocol on the shim's stdout (a pipe to aetherd):
 *   "started PID STARTTIME\n"  once the program has been exec'd (STARTTIME: /proc/PID/stat field 22)
 *   "error ERRNO MESSAGE\n"    when it could not be started (nothing else is written; exit 1)
 *   "exited\n"                 after exit.json has been written
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CGROUP_FILES 16

static int sigchld_pipe[2] = {-1, -1};

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  ssize_t ignored = write(sigchld_pipe[1], "c", 1);
  (void)ignored;
  errno = saved;
}

static void die_start(const char *what, int err) {
  dprintf(STDOUT_FILENO, "error %d %s: %s\n", err, what, strerror(err));
  _exit(1);
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

int main(int argc, char **argv) {
  const char *dir = NULL, *cwd = NULL;
  const char *cgroup_files[MAX_CGROUP_FILES];
  int n_cgroup = 0;
  long long cap = -1, uid = -1, gid = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) { fprintf(stderr, "aether-shim: %s needs a value\n", argv[i]); return 2; }
    if (strcmp(argv[i], "--dir") == 0) dir = argv[++i];
    else if (strcmp(argv[i], "--cwd") == 0) cwd = argv[++i];
    else if (strcmp(argv[i], "--cap") == 0) cap = atoll(argv[++i]);
    else if (strcmp(argv[i], "--uid") == 0) uid = atoll(argv[++i]);
    else if (strcmp(argv[i], "--gid") == 0) gid = atoll(argv[++i]);
    else if (strcmp(argv[i], "--cgroup-procs") == 0 && n_cgroup < MAX_CGROUP_FILES) cgroup_files[n_cgroup++] = argv[++i];
    else { fprintf(stderr, "aether-shim: unknown option %s\n", argv[i]); return 2; }
  }
  if (!dir || cap < 0 || i >= argc) {
    fprintf(stderr, "usage: aether-shim --dir DIR --cap BYTES [--cwd DIR] [--uid N] [--gid N] [--cgroup-procs FILE]... -- ARGV...\n");
    return 2;
  }
  char **program = &argv[i];

  signal(SIGPIPE, SIG_IGN); /* aetherd may be gone when we report; that must not kill us */
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);

  char path[4096];
  snprintf(path, sizeof path, "%s/stdout.log", dir);
  int out_log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  snprintf(path, sizeof path, "%s/stderr.log", dir);
  int err_log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (out_log < 0 || err_log < 0) die_start("opening the log files", errno);

  int out_pipe[2], err_pipe[2], exec_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC) || pipe2(exec_pipe, O_CLOEXEC) ||
      pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK))
    die_start("creating pipes", errno);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  pid_t pid = fork();
  if (pid < 0) die_start("fork", errno);
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
    for (int k = 0; k < n_cgroup; k++) {
      int fd = open(cgroup_files[k], O_WRONLY | O_CLOEXEC);
      if (fd < 0) goto fail;
      char pidbuf[32];
      int len = snprintf(pidbuf, sizeof pidbuf, "%d\n", (int)getpid());
      if (write(fd, pidbuf, (size_t)len) != len) { close(fd); goto fail; }
      close(fd);
    }
    step = "redirecting output";
    devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0) goto fail;
    step = "setting the group id";
    if (gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0)) goto fail;
    step = "setting the user id";
    if (uid >= 0 && setuid((uid_t)uid) != 0) goto fail;
    step = "changing to the working directory";
    if (cwd && chdir(cwd) != 0) goto fail;
    step = "executing the program";
    execv(program[0], program);
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
  do n = read(exec_pipe[0], failure, sizeof failure - 1); while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n > 0) {
    failure[n] = 0;
    int err = atoi(failure);
    const char *step = strchr(failure, ' ');
    waitpid(pid, NULL, 0);
    dprintf(STDOUT_FILENO, "error %d %s: %s\n", err, step ? step + 1 : "starting", strerror(err));
    return 1;
  }

  unsigned long long start_time = read_start_time(pid);
  char doc[512];
  snprintf(doc, sizeof doc, "{\"pid\":%d,\"startTime\":\"%llu\",\"shimPid\":%d,\"shimStartTime\":\"%llu\",\"timeMs\":%lld}\n",
           (int)pid, start_time, (int)getpid(), read_start_time(getpid()), now_ms());
  if (write_atomic(dir, "started.json", doc) != 0) {
    int err = errno;
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    die_start("recording the started process", err);
  }
  dprintf(STDOUT_FILENO, "started %d %llu\n", (int)pid, start_time);

  struct capture out = {out_pipe[0], out_log, 0, 0}, err = {err_pipe[0], err_log, 0, 0};
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
    if (out_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) out_open = pump(&out, (uint64_t)cap) != 0;
    if (err_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) err_open = pump(&err, (uint64_t)cap) != 0;
    if (fds[2].revents & POLLIN) {
      char drain[64];
      while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {}
    }
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) exited = 1;
  }
  /* The program is gone; take what it wrote last. Children it left behind may hold the pipes open,
     so read without blocking instead of waiting for end of file. */
  fcntl(out.from, F_SETFL, O_NONBLOCK);
  fcntl(err.from, F_SETFL, O_NONBLOCK);
  while (out_open && pump(&out, (uint64_t)cap) == 1) {}
  while (err_open && pump(&err, (uint64_t)cap) == 1) {}
  fsync(out_log);
  fsync(err_log);

  if (WIFEXITED(status))
    snprintf(doc, sizeof doc, "{\"exitCode\":%d,\"signal\":0,\"timeMs\":%lld,\"droppedBytes\":%llu}\n",
             WEXITSTATUS(status), now_ms(), (unsigned long long)(out.dropped + err.dropped));
  else
    snprintf(doc, sizeof doc, "{\"exitCode\":null,\"signal\":%d,\"timeMs\":%lld,\"droppedBytes\":%llu}\n",
             WIFSIGNALED(status) ? WTERMSIG(status) : 0, now_ms(), (unsigned long long)(out.dropped + err.dropped));
  write_atomic(dir, "exit.json", doc);
  dprintf(STDOUT_FILENO, "exited\n");
  return 0;
}
