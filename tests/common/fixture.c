/* fixture.c — real server processes and a tiny HTTP client for tests. */
#include "fixture.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PROMOD_BIN
#error PROMOD_BIN must be defined by the build
#endif

void tfx_rmrf(const char *path)
{
    if (!path || strlen(path) < 6 || strncmp(path, "/tmp/", 5) != 0)
        return; /* never delete outside /tmp */
    pid_t p = fork();
    if (p == 0) {
        execlp("rm", "rm", "-rf", path, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
}

void tfx_tmpdir(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/promod-test-XXXXXX");
    if (!mkdtemp(buf))
        abort();
}

static void mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

static void copy_dir(const char *from, const char *to)
{
    pid_t p = fork();
    if (p == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "cp -r '%s'/. '%s'/ 2>/dev/null", from, to);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
}

void tfx_server_init(struct tfx_server *s, const char *config_fields)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    tfx_tmpdir(s->dir, sizeof s->dir);
    snprintf(s->data, sizeof s->data, "%s/data", s->dir);
    snprintf(s->rules, sizeof s->rules, "%s/rules", s->dir);
    snprintf(s->plugins, sizeof s->plugins, "%s/plugins", s->dir);
    snprintf(s->models, sizeof s->models, "%s/models", s->dir);
    snprintf(s->segments, sizeof s->segments, "%s/segments", s->dir);
    snprintf(s->config, sizeof s->config, "%s/promod.lua", s->dir);
    snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
    mkdirs(s->rules);
    mkdirs(s->plugins);
    mkdirs(s->models);
    mkdirs(s->segments);
    char lib[320];
    snprintf(lib, sizeof lib, "%s/lib", s->rules);
    mkdirs(lib);
    copy_dir(PROMOD_SRC "/plugins", s->plugins);
    copy_dir(PROMOD_SRC "/rules/lib", lib);
    char cfg[8192];
    snprintf(cfg, sizeof cfg,
             "return {\n  data_dir = \"%s\",\n  rules_dir = \"%s\",\n  plugins_dir = \"%s\",\n"
             "  models_dir = \"%s\",\n  segments_dir = \"%s\",\n  threads = 2,\n"
             "  reload_debounce_ms = 50,\n  %s\n}\n",
             s->data, s->rules, s->plugins, s->models, s->segments,
             config_fields ? config_fields : "");
    FILE *f = fopen(s->config, "w");
    if (!f)
        abort();
    fputs(cfg, f);
    fclose(f);
}

void tfx_write(struct tfx_server *s, const char *rel, const char *content)
{
    char path[600], tmp[620];
    snprintf(path, sizeof path, "%s/%s", s->dir, rel);
    char d[600];
    snprintf(d, sizeof d, "%s", path);
    char *slash = strrchr(d, '/');
    if (slash) {
        *slash = 0;
        mkdirs(d);
    }
    snprintf(tmp, sizeof tmp, "%s/.tfx-tmp", d);
    FILE *f = fopen(tmp, "w");
    if (!f)
        abort();
    fputs(content, f);
    fclose(f);
    rename(tmp, path);
}

void tfx_unlink(struct tfx_server *s, const char *rel)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", s->dir, rel);
    unlink(path);
}

int tfx_server_start(struct tfx_server *s) { return tfx_server_start_listen(s, "127.0.0.1:0"); }

int tfx_server_start_listen(struct tfx_server *s, const char *listen)
{
    char portfile[320];
    snprintf(portfile, sizeof portfile, "%s/port", s->dir);
    unlink(portfile);
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        /* a test process that dies (crash, Criterion timeout) takes its
         * server with it instead of leaving it running */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execl(PROMOD_BIN, PROMOD_BIN, "serve", "-c", s->config, "--listen", listen,
              "--port-file", portfile, (char *)NULL);
        _exit(127);
    }
    s->pid = p;
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int port = 0;
            if (fscanf(f, "%d", &port) == 1 && port > 0) {
                fclose(f);
                s->port = port;
                return 0;
            }
            fclose(f);
        }
        int st;
        if (waitpid(p, &st, WNOHANG) == p) {
            s->pid = -1;
            return -1;
        }
        usleep(10000);
    }
    tfx_server_kill(s);
    return -1;
}

int tfx_server_alive(struct tfx_server *s)
{
    if (s->pid <= 0)
        return 0;
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        s->pid = -1;
        return 0;
    }
    return 1;
}

int tfx_server_stop(struct tfx_server *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 1500; i++) { /* 15 s */
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = -1;
    return -1;
}

void tfx_server_kill(struct tfx_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    int st;
    waitpid(s->pid, &st, 0);
    s->pid = -1;
}

void tfx_server_cleanup(struct tfx_server *s)
{
    if (s->pid > 0)
        tfx_server_stop(s);
    tfx_rmrf(s->dir);
}

char *tfx_server_log(struct tfx_server *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    return b;
}

/* A connected socket, or -1 with *err (errno) and *phase (SOCKET or CONNECT). */
static int connect_why(int port, int *err, enum tfx_fail *phase)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        *err = errno;
        *phase = TFX_FAIL_SOCKET;
        return -1;
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        *err = errno;
        *phase = TFX_FAIL_CONNECT;
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int tfx_connect_port(int port)
{
    int err;
    enum tfx_fail phase;
    return connect_why(port, &err, &phase);
}

char *tfx_read_all_why(int fd, size_t *outlen, int timeout_ms, enum tfx_read_end *end, int *err)
{
    size_t cap = 65536, len = 0;
    char *b = malloc(cap);
    *err = 0;
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        int pr = poll(&p, 1, timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            *end = pr == 0 ? TFX_READ_TIMEOUT : TFX_READ_ERROR;
            *err = pr == 0 ? 0 : errno;
            break;
        }
        if (len + 65536 > cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        ssize_t n = read(fd, b + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *end = n == 0 ? TFX_READ_EOF : TFX_READ_ERROR;
            *err = n == 0 ? 0 : errno;
            break;
        }
        len += (size_t)n;
    }
    b[len] = 0;
    *outlen = len;
    return b;
}

char *tfx_read_all(int fd, size_t *outlen, int timeout_ms)
{
    enum tfx_read_end end;
    int err;
    return tfx_read_all_why(fd, outlen, timeout_ms, &end, &err);
}

int tfx_send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *tfx_raw(struct tfx_server *s, const void *data, size_t len)
{
    int fd = tfx_connect_port(s->port);
    if (fd < 0)
        return strdup("");
    tfx_send_all(fd, data, len);
    size_t n;
    char *out = tfx_read_all(fd, &n, 5000);
    close(fd);
    return out;
}

/* A chunked body decoded in place (a streamed reply); a body cut short
 * keeps the chunks that arrived whole. */
static void dechunk(struct tfx_resp *r)
{
    char *in = r->body, *end = r->body + r->len, *out = r->body;
    while (in < end) {
        char *eol = strstr(in, "\r\n");
        if (!eol)
            break;
        size_t sz = strtoul(in, NULL, 16);
        in = eol + 2;
        if (!sz || (size_t)(end - in) < sz)
            break;
        memmove(out, in, sz);
        out += sz;
        in += sz + 2;
    }
    r->len = (size_t)(out - r->body);
    r->body[r->len] = 0;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

const char *tfx_fail_name(enum tfx_fail f)
{
    switch (f) {
    case TFX_FAIL_NONE: return "none";
    case TFX_FAIL_SOCKET: return "socket";
    case TFX_FAIL_CONNECT: return "connect";
    case TFX_FAIL_SEND: return "send";
    case TFX_FAIL_TIMEOUT: return "timeout";
    case TFX_FAIL_READ: return "read_error";
    case TFX_FAIL_EOF_EMPTY: return "eof_before_any_byte";
    case TFX_FAIL_EOF_PARTIAL: return "eof_mid_response";
    case TFX_FAIL_MALFORMED: return "malformed_reply";
    }
    return "?";
}

const char *tfx_fail_describe(const struct tfx_resp *r, char *buf, size_t len)
{
    snprintf(buf, len, "no answer: %s%s%s, %zu bytes received, after %ld ms (connect took %ld ms), client port %d",
             tfx_fail_name(r->fail), r->fail_errno ? " " : "", r->fail_errno ? strerror(r->fail_errno) : "",
             r->got_bytes, r->fail_ms, r->connect_ms, r->local_port);
    return buf;
}

/* The head of a whole answer is in `all`: is the body complete?  With
 * Content-Length it must be exactly there; a chunked one must end with
 * the last chunk; otherwise (close-delimited) whatever came is the body. */
static int body_complete(const char *headers, size_t body_len, const char *body)
{
    const char *cl = strcasestr(headers, "\r\nContent-Length:");
    if (cl)
        return body_len >= strtoull(cl + 17, NULL, 10);
    if (strcasestr(headers, "\r\nTransfer-Encoding: chunked"))
        return body_len >= 5 && !memcmp(body + body_len - 5, "0\r\n\r\n", 5);
    return 1;
}

int tfx_http(struct tfx_server *s, const char *method, const char *path, const char *headers,
             const char *body, size_t len, struct tfx_resp *r)
{
    memset(r, 0, sizeof *r);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int fd = connect_why(s->port, &r->fail_errno, &r->fail);
    if (fd < 0) {
        r->fail_ms = ms_since(&t0);
        r->body = strdup("");
        return 0;
    }
    r->connect_ms = ms_since(&t0);
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0)
        r->local_port = ntohs(me.sin_port);
    char head[8192];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Length: %zu\r\n%s\r\n",
                      method, path, body ? len : 0, headers ? headers : "");
    int send_errno = 0;
    if (tfx_send_all(fd, head, (size_t)hl) || (body && len && tfx_send_all(fd, body, len))) {
        /* the server may answer and close early (413): read what it said */
        send_errno = errno;
    }
    size_t n;
    enum tfx_read_end end;
    int rerr;
    char *all = tfx_read_all_why(fd, &n, 60000, &end, &rerr);
    close(fd);
    r->got_bytes = n;
    char *sep = strstr(all, "\r\n\r\n");
    if (!sep || sscanf(all, "HTTP/1.%*d %d", &r->status) != 1) {
        /* no answer: say why */
        if (sep)
            r->fail = TFX_FAIL_MALFORMED;
        else if (end == TFX_READ_TIMEOUT)
            r->fail = TFX_FAIL_TIMEOUT;
        else if (end == TFX_READ_ERROR)
            r->fail = n == 0 && send_errno ? TFX_FAIL_SEND : TFX_FAIL_READ;
        else if (n == 0)
            r->fail = send_errno ? TFX_FAIL_SEND : TFX_FAIL_EOF_EMPTY;
        else
            r->fail = TFX_FAIL_EOF_PARTIAL;
        r->fail_errno = r->fail == TFX_FAIL_SEND ? send_errno : rerr;
        r->fail_ms = ms_since(&t0);
        r->status = 0;
        r->body = all;
        r->len = n;
        return 0;
    }
    /* a head arrived (the status stands, as it always did); a body cut
     * short is still told in fail */
    if (strcmp(method, "HEAD") != 0 && r->status != 204 && r->status != 304 &&
        !body_complete(all, n - (size_t)(sep + 4 - all), sep + 4)) {
        r->fail = end == TFX_READ_TIMEOUT ? TFX_FAIL_TIMEOUT
                  : end == TFX_READ_ERROR ? TFX_FAIL_READ
                                          : TFX_FAIL_EOF_PARTIAL;
        r->fail_errno = rerr;
        r->fail_ms = ms_since(&t0);
    }
    size_t hsz = (size_t)(sep - all);
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)(hsz < 4095 ? hsz : 4095), all);
    const char *ct = strcasestr(r->headers, "\r\nContent-Type:");
    if (ct) {
        ct += 15;
        while (*ct == ' ')
            ct++;
        size_t k = strcspn(ct, "\r\n");
        snprintf(r->ctype, sizeof r->ctype, "%.*s", (int)(k < 127 ? k : 127), ct);
    }
    r->len = n - hsz - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = 0;
    free(all);
    if (strcasestr(r->headers, "\r\nTransfer-Encoding: chunked"))
        dechunk(r);
    if (strstr(r->ctype, "json"))
        r->json = json_loadb(r->body, r->len, 0, NULL);
    return r->status;
}

int tfx_req(struct tfx_server *s, const char *method, const char *path, const char *json,
            struct tfx_resp *r)
{
    return tfx_http(s, method, path, json ? "Content-Type: application/json\r\n" : NULL, json,
                    json ? strlen(json) : 0, r);
}

void tfx_resp_free(struct tfx_resp *r)
{
    free(r->body);
    if (r->json)
        json_decref(r->json);
    memset(r, 0, sizeof *r);
}

const char *tfx_err_code(const struct tfx_resp *r)
{
    const char *c = json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    return c ? c : "";
}

int tfx_promod(char **output, const char *arg, ...)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = PROMOD_BIN;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < 63; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int pfd[2];
    if (pipe(pfd))
        return -1;
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(PROMOD_BIN, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t len;
    char *out = tfx_read_all(pfd[0], &len, 120000);
    close(pfd[0]);
    int st = 0;
    for (int i = 0; i < 12000; i++) { /* 120 s */
        if (waitpid(p, &st, WNOHANG) == p)
            goto done;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
done:
    if (output)
        *output = out;
    else
        free(out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int tfx_metric(const char *text, const char *name, const char *labels, double *value)
{
    size_t nl = strlen(name), ll = strlen(labels);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) != 0)
            continue;
        const char *p = line + nl;
        if (ll) {
            if (*p != '{' || strncmp(p + 1, labels, ll) != 0 || p[1 + ll] != '}')
                continue;
            p += ll + 2;
        }
        if (*p != ' ')
            continue;
        *value = strtod(p + 1, NULL);
        return 1;
    }
    return 0;
}

int tfx_wait_rules_live(struct tfx_server *s, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        struct tfx_resp r;
        int st = tfx_req(s, "GET", "/api/v1/rules", NULL, &r);
        long long gen = -1, live = -2;
        if (st == 200 && r.json) {
            gen = json_integer_value(json_object_get(r.json, "generation"));
            live = json_integer_value(json_object_get(r.json, "live_generation"));
        }
        tfx_resp_free(&r);
        if (live >= gen && gen > 0)
            return 1;
        usleep(20000);
    }
    return 0;
}
