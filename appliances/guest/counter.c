/*
 * drover-counter: the `counter` appliance's service.
 *
 * Increments a generation number 10 times per second on absolute-time ticks
 * (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC): after a pause, every
 * missed tick is caught up at once, one generation each, never skipped. The
 * generation lives in an anonymous mmap'd page (so it travels with the VM's
 * memory on migration/save) and in a state file written and fdatasync'd on
 * every tick, so a reboot continues from the last printed generation.
 * Each tick prints `DROVER-COUNTER gen=<n> t=<unix seconds>.<millis>` on stdout.
 *
 * --dirty-mib N dirties N MiB of memory per second (spread over the ticks) in
 * a buffer of max(N,16) MiB, so migration benchmarks have a steady dirty rate.
 * SIGTERM/SIGINT: write the generation, fdatasync, exit 0 (a graceful stop loses nothing).
 *
 * Built with `gcc -static -O2`; no dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TICKS_PER_SECOND 10
#define TICK_NS (1000000000L / TICKS_PER_SECOND)
#define PAGE 4096UL
#define STATE_WIDTH 21 /* 20 digits + '\n': fixed size, so each update rewrites one block in place */

static volatile sig_atomic_t stop_requested = 0;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

struct counter_page {
  uint64_t magic;
  uint64_t generation;
};

static void die(const char *what) {
  fprintf(stderr, "DROVER-COUNTER-ERROR %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(const char *argv0) {
  fprintf(stderr, "usage: %s --state FILE [--dirty-mib N] [--pidfile FILE]\n", argv0);
  exit(2);
}

static uint64_t read_state(const char *path) {
  char buf[64];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    die("open state file");
  }
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(buf, &end, 10);
  if (errno != 0 || end == buf) {
    fprintf(stderr, "DROVER-COUNTER-ERROR unreadable state file %s, starting from 0\n", path);
    return 0;
  }
  return (uint64_t)v;
}

static void write_state(int fd, uint64_t gen) {
  char buf[STATE_WIDTH + 1];
  snprintf(buf, sizeof buf, "%020" PRIu64 "\n", gen);
  if (pwrite(fd, buf, STATE_WIDTH, 0) != STATE_WIDTH) die("write state file");
  if (fdatasync(fd) != 0) die("fdatasync state file");
}

static void timespec_add_ns(struct timespec *t, long ns) {
  t->tv_nsec += ns;
  while (t->tv_nsec >= 1000000000L) {
    t->tv_nsec -= 1000000000L;
    t->tv_sec += 1;
  }
}

int main(int argc, char **argv) {
  const char *state_path = NULL;
  const char *pid_path = NULL;
  long dirty_mib = 0;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) {
      state_path = argv[++i];
    } else if (strcmp(argv[i], "--pidfile") == 0 && i + 1 < argc) {
      pid_path = argv[++i];
    } else if (strcmp(argv[i], "--dirty-mib") == 0 && i + 1 < argc) {
      char *end = NULL;
      dirty_mib = strtol(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || dirty_mib < 0 || dirty_mib > 65536) usage(argv[0]);
    } else {
      usage(argv[0]);
    }
  }
  if (state_path == NULL) usage(argv[0]);

  setvbuf(stdout, NULL, _IOLBF, 0);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  /* No SA_RESTART: clock_nanosleep must return EINTR so the loop sees the flag. */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);

  struct counter_page *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) die("mmap counter page");
  page->magic = 0x4452564552434e54ULL; /* "DRVERCNT" */
  page->generation = read_state(state_path);

  int fd = open(state_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) die("open state file for writing");

  /* The dirty buffer: touched one byte per page, cycling through it. */
  unsigned char *dirty = NULL;
  size_t dirty_bytes = 0, dirty_pages = 0, dirty_cursor = 0;
  uint64_t dirty_pages_per_second = 0, dirty_done_this_second = 0;
  if (dirty_mib > 0) {
    size_t buf_mib = dirty_mib > 16 ? (size_t)dirty_mib : 16;
    dirty_bytes = buf_mib << 20;
    dirty = mmap(NULL, dirty_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dirty == MAP_FAILED) die("mmap dirty buffer");
    dirty_pages = dirty_bytes / PAGE;
    dirty_pages_per_second = ((uint64_t)dirty_mib << 20) / PAGE;
  }

  if (pid_path != NULL) {
    FILE *pf = fopen(pid_path, "w");
    if (pf == NULL) die("write pidfile");
    fprintf(pf, "%ld\n", (long)getpid());
    fclose(pf);
  }

  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  unsigned tick_in_second = 0;

  while (!stop_requested) {
    timespec_add_ns(&next, TICK_NS);
    for (;;) {
      int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
      if (rc == 0) break;
      if (rc == EINTR && stop_requested) break;
      if (rc != EINTR) {
        errno = rc;
        die("clock_nanosleep");
      }
    }
    if (stop_requested) break;

    page->generation += 1;
    uint64_t gen = page->generation;
    write_state(fd, gen);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("DROVER-COUNTER gen=%" PRIu64 " t=%lld.%03ld\n", gen, (long long)now.tv_sec, now.tv_nsec / 1000000L);

    if (dirty != NULL) {
      /* Spread the second's quota evenly: tick k of 10 brings the total to k/10 of it. */
      tick_in_second += 1;
      uint64_t target = dirty_pages_per_second * tick_in_second / TICKS_PER_SECOND;
      while (dirty_done_this_second < target) {
        dirty[dirty_cursor * PAGE] = (unsigned char)(gen + dirty_done_this_second);
        dirty_cursor = (dirty_cursor + 1) % dirty_pages;
        dirty_done_this_second += 1;
      }
      if (tick_in_second == TICKS_PER_SECOND) {
        tick_in_second = 0;
        dirty_done_this_second = 0;
      }
    }
  }

  write_state(fd, page->generation);
  close(fd);
  if (pid_path != NULL) unlink(pid_path);
  fprintf(stderr, "DROVER-COUNTER-STOPPED gen=%" PRIu64 "\n", page->generation);
  return 0;
}
