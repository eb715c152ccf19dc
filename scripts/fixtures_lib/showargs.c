/* showargs: the command of imagefs' init test images (cmd-*, noshell), a static program that needs
 * nothing from the image. It prints, one "SHOWARGS " line each, what the default /init gave it:
 *
 *   SHOWARGS argc=N
 *   SHOWARGS argv[I]=ARG                 every argument
 *   SHOWARGS env=KEY=VALUE               every environment entry, sorted
 *   SHOWARGS cwd=DIR
 *   SHOWARGS uid=U gid=G groups=A,B      real ids (effective ones too when they differ)
 *   SHOWARGS ppid=P
 *
 * then does what its arguments ask, among them (anywhere in argv):
 *   --orphans N      makes N orphans: each child forks a grandchild and exits at once, so the
 *                    grandchild's parent becomes PID 1; the grandchild waits to see that, records
 *                    its pid, and exits. Then it waits (up to 5 s) for PID 1 to reap them and prints
 *                    "SHOWARGS orphans=N reparented=R reaped=Z" (all three equal when PID 1 reaps).
 *   --term-pid1      sends SIGTERM to PID 1 and waits to be killed by it (a forwarding init);
 *                    after 5 s prints "SHOWARGS no signal came" and exits 99.
 *   --exit N         exits with status N (default 0)
 *
 * Keep it free of anything but libc: it is linked with -static and must be reproducible. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int compare(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

static int orphans(int n) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  for (int i = 0; i < n; ++i) {
    pid_t child = fork();
    if (child == 0) {
      pid_t grandchild = fork();
      if (grandchild == 0) {
        close(fds[0]);
        for (int t = 0; t < 500 && getppid() != 1; ++t) sleep_ms(10);
        pid_t me = getppid() == 1 ? getpid() : -getpid();
        if (write(fds[1], &me, sizeof me) != sizeof me) _exit(1);
        _exit(0);
      }
      _exit(0);
    }
    waitpid(child, NULL, 0);
  }
  close(fds[1]);
  pid_t pids[256];
  int got = 0, reparented = 0;
  while (got < n && got < 256 && read(fds[0], &pids[got], sizeof pids[got]) == sizeof pids[got]) {
    if (pids[got] > 0) ++reparented;
    else pids[got] = -pids[got];
    ++got;
  }
  /* A zombie keeps its /proc entry until its parent reaps it. */
  int reaped = 0;
  for (int t = 0; t < 500; ++t) {
    reaped = 0;
    for (int i = 0; i < got; ++i) {
      char path[64];
      struct stat st;
      snprintf(path, sizeof path, "/proc/%d", (int)pids[i]);
      if (stat(path, &st) != 0) ++reaped;
    }
    if (reaped == got) break;
    sleep_ms(10);
  }
  printf("SHOWARGS orphans=%d reparented=%d reaped=%d\n", got, reparented, reaped);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("SHOWARGS argc=%d\n", argc);
  for (int i = 0; i < argc; ++i) printf("SHOWARGS argv[%d]=%s\n", i, argv[i]);
  size_t n = 0;
  while (environ[n] != NULL) ++n;
  char **env = calloc(n + 1, sizeof *env);
  memcpy(env, environ, n * sizeof *env);
  qsort(env, n, sizeof *env, compare);
  for (size_t i = 0; i < n; ++i) printf("SHOWARGS env=%s\n", env[i]);
  char cwd[4096];
  printf("SHOWARGS cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
  gid_t groups[256];
  int ngroups = getgroups(256, groups);
  printf("SHOWARGS uid=%d gid=%d groups=", (int)getuid(), (int)getgid());
  for (int i = 0; i < ngroups; ++i) printf("%s%d", i ? "," : "", (int)groups[i]);
  printf("\n");
  if (geteuid() != getuid() || getegid() != getgid())
    printf("SHOWARGS euid=%d egid=%d\n", (int)geteuid(), (int)getegid());
  printf("SHOWARGS ppid=%d\n", (int)getppid());

  int status = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--orphans") == 0 && i + 1 < argc) {
      orphans(atoi(argv[++i]));
    } else if (strcmp(argv[i], "--term-pid1") == 0) {
      kill(1, SIGTERM);
      sleep_ms(5000);
      printf("SHOWARGS no signal came\n");
      return 99;
    } else if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc) {
      status = atoi(argv[++i]);
    }
  }
  return status;
}
