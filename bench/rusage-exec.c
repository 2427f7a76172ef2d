/*
 * rusage-exec: run one command and report what wait4(2) says about it.
 *
 *   rusage-exec RESULT_FILE COMMAND [ARG...]
 *
 * Writes one line to RESULT_FILE:
 *   "<wait status> <wall ns> <user us> <sys us> <maxrss KiB>"
 * The rusage covers the command and every descendant it waited for;
 * ru_maxrss is the largest single process among them.
 *
 * Why not measure from the Python driver directly: on exec the kernel folds
 * the high-water RSS of the address space being replaced into the process's
 * ru_maxrss. A child forked (or vforked) from the driver therefore never
 * reports less than the driver's own ~30 MiB, whatever the tool really used.
 * Forked from this ~1 MiB program, the floor is negligible.
 *
 * SIGTERM (the driver's timeout or cleanup) kills the command; SIGINT is left
 * to the command, and this program stays to reap it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t child;

static void on_term(int sig) {
    (void)sig;
    if (child > 0) kill(child, SIGKILL);
}

static long long ns(const struct timespec *t) { return t->tv_sec * 1000000000LL + t->tv_nsec; }
static long long us(const struct timeval *t) { return t->tv_sec * 1000000LL + t->tv_usec; }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s RESULT_FILE COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    FILE *out = fopen(argv[1], "we"); /* close-on-exec: the command must not inherit it */
    if (!out) {
        fprintf(stderr, "rusage-exec: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "rusage-exec: fork: %s\n", strerror(errno));
        return 2;
    }
    if (pid == 0) {
        /* Ignored signals stay ignored across exec: give the command defaults. */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(argv[2], argv + 2);
        fprintf(stderr, "rusage-exec: cannot run %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    child = pid;

    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "rusage-exec: wait4: %s\n", strerror(errno));
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(out, "%d %lld %lld %lld %ld\n", status, ns(&t1) - ns(&t0), us(&ru.ru_utime), us(&ru.ru_stime),
            ru.ru_maxrss);
    return fclose(out) == 0 ? 0 : 2;
}
