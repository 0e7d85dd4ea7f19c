#define _GNU_SOURCE
/* swclient: the attacker (and decoy) the integration tests run inside containers.
 *
 *   swclient connect PATH        connect to a UNIX socket, send a Docker API request,
 *                                print the first response line
 *   swclient connect-fd PATH     open PATH with O_PATH, then connect via /proc/self/fd/N
 *   swclient open PATH           open PATH O_RDWR (a socket file answers ENXIO)
 *   swclient serve PATH          bind and listen at PATH (a decoy), accept forever
 *   swclient serve-log PATH LOG  a stand-in daemon: per connection, read what the client
 *                                sends (one read, 2 s at most), answer when it sent
 *                                anything, append "conn <bytes>" to LOG
 *   swclient decoy PATH          bind PATH, then connect to it ourselves and send
 *   swclient touch-connect PATH  connect and close without sending a byte
 *   swclient create PATH         connect and ask the daemon to create a privileged container
 *                                named sw-escape with / bind-mounted (the node takeover)
 *   swclient bench-open FILE     ns per open()+close() of a regular file (median of batches)
 *   swclient bench-connect PATH  ns per connect() to an unrelated listener it makes at PATH
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] = "GET /v1.40/containers/json HTTP/1.0\r\nHost: docker\r\n\r\n";

static const char CREATE_BODY[] =
    "{\"Image\":\"sockwarden-test:latest\",\"Cmd\":[\"/bin/true\"],"
    "\"HostConfig\":{\"Privileged\":true,\"Binds\":[\"/:/host\"]}}";

static int unix_connect_sending(const char *path, const char *request, size_t len);

static int create_container(const char *path) {
    char request[512];
    int n = snprintf(request, sizeof(request),
                     "POST /v1.40/containers/create?name=sw-escape HTTP/1.0\r\nHost: docker\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof(CREATE_BODY) - 1, CREATE_BODY);
    return unix_connect_sending(path, request, (size_t)n);
}

static int unix_connect(const char *path, int send_request) {
    return unix_connect_sending(path, send_request ? REQUEST : NULL, sizeof(REQUEST) - 1);
}

static int unix_connect_sending(const char *path, const char *request, size_t len) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        printf("connect %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (request) {
        if (write(fd, request, len) < 0) {
            printf("write: %s\n", strerror(errno));
            return 1;
        }
        char buf[256] = {0};
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n > 0) {
            char *eol = strpbrk(buf, "\r\n");
            if (eol) *eol = 0;
            printf("%s\n", buf);
        }
    }
    close(fd);
    printf("connected %s\n", path);
    return 0;
}

static int listen_at(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, 16) != 0) {
        printf("listen %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Median over 9 batches of 2000 operations, in ns per operation. */
static long long bench(int connect_mode, const char *path) {
    enum { BATCHES = 9, OPS = 2000 };
    long long per_batch[BATCHES];
    int listener = connect_mode ? listen_at(path) : -1;
    for (int b = 0; b < BATCHES; b++) {
        long long t0 = now_ns();
        for (int i = 0; i < OPS; i++) {
            if (connect_mode) {
                struct sockaddr_un addr = {.sun_family = AF_UNIX};
                strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) exit(1);
                int c = accept(listener, NULL, NULL);
                close(c);
                close(fd);
            } else {
                int fd = open(path, O_RDONLY);
                if (fd < 0) exit(1);
                close(fd);
            }
        }
        per_batch[b] = (now_ns() - t0) / OPS;
    }
    qsort(per_batch, BATCHES, sizeof(per_batch[0]), cmp_ll);
    return per_batch[BATCHES / 2];
}

__attribute__((noreturn)) static void serve_log(const char *path, const char *log) {
    int fd = listen_at(path);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[4096];
        ssize_t n = read(c, buf, sizeof(buf));
        if (n > 0) {
            static const char OK[] = "HTTP/1.0 200 OK\r\n\r\n";
            (void)!write(c, OK, sizeof(OK) - 1);
        }
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "conn %zd\n", n < 0 ? 0 : n);
            fclose(f);
        }
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "serve-log")) serve_log(argv[2], argv[3]);
    if (argc != 3) {
        fprintf(stderr, "usage: swclient connect|connect-fd|open|serve|decoy|touch-connect|create PATH\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    if (!strcmp(mode, "connect")) return unix_connect(path, 1);
    if (!strcmp(mode, "touch-connect")) return unix_connect(path, 0);
    if (!strcmp(mode, "create")) return create_container(path);
    if (!strcmp(mode, "connect-fd")) {
        int pfd = open(path, O_PATH);
        if (pfd < 0) {
            printf("open O_PATH %s: %s\n", path, strerror(errno));
            return 1;
        }
        char proc_path[64];
        snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", pfd);
        return unix_connect(proc_path, 1);
    }
    if (!strcmp(mode, "bench-open")) {
        printf("%lld\n", bench(0, path));
        return 0;
    }
    if (!strcmp(mode, "bench-connect")) {
        printf("%lld\n", bench(1, path));
        return 0;
    }
    if (!strcmp(mode, "open")) {
        int fd = open(path, O_RDWR);
        printf("open %s: %s\n", path, fd < 0 ? strerror(errno) : "ok");
        return 0;
    }
    if (!strcmp(mode, "serve")) {
        int fd = listen_at(path);
        for (;;) {
            int c = accept(fd, NULL, NULL);
            if (c >= 0) close(c);
        }
    }
    if (!strcmp(mode, "decoy")) {
        int fd = listen_at(path);
        int rc = unix_connect(path, 0);
        int c = accept(fd, NULL, NULL);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
        int d = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(d, (struct sockaddr *)&addr, sizeof(addr)) == 0)
            rc |= write(d, REQUEST, sizeof(REQUEST) - 1) < 0;
        printf("decoy %s done\n", path);
        (void)c;
        return rc;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
