/*
 * tz.c — TZif reader, zone cache, ISO-8601 and duration parsing.
 *
 * A zone file (RFC 8536) is read once, validated, and turned into an
 * immutable struct zone that lives until the process exits; the cache maps
 * names to those structs under one mutex.  Only the lookup is locked: the
 * file is read and parsed outside the lock, and a racing duplicate load is
 * simply dropped.  Because zones are never freed, a pointer taken under the
 * lock stays valid after it is released (and tm_zone may point into one).
 *
 * Instants after the last stored transition follow the file's footer
 * (a POSIX TZ string such as "CET-1CEST,M3.5.0,M10.5.0/3").  Debian ships
 * "fat" files with transitions up to 2037, but slim files stop much
 * earlier, so the footer matters for any date in the future.
 *
 * Calendar arithmetic uses Howard Hinnant's days_from_civil/civil_from_days
 * (proleptic Gregorian, exact for any int64 day count we feed it).
 */
#include "base/tz.h"
#include "base/err.h"
#include "base/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TZ_ZONEINFO_DIR
#define TZ_ZONEINFO_DIR "/usr/share/zoneinfo"
#endif

#define NAME_MAX_LEN 128          /* longest tzdata name is ~32 chars */
#define FILE_MAX (1u << 20)       /* real TZif files are a few KiB */
#define OFF_MAX (26 * 3600)       /* |UTC offset| sanity bound */
/* Clamp for rule arithmetic: ±2^56 s is ±2.2 billion years, far past any
 * meaningful date, and leaves room to add offsets without overflow. */
#define T_CLAMP ((int64_t)1 << 56)

/* ------------------------------------------------------------------ */
/* Calendar                                                            */

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *yy, int *mm, int *dd)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *yy = yoe + era * 400 + (m <= 2);
    *mm = m;
    *dd = d;
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday(int64_t days) { return (int)(((days % 7) + 11) % 7); }

/* ------------------------------------------------------------------ */
/* POSIX TZ strings (the TZif footer)                                  */

struct rule_date {
    char kind;      /* 'J' Julian 1..365 (no Feb 29), 'N' 0..365, 'M' month rule */
    int n;          /* J / N day */
    int m, w, d;    /* M: month 1..12, week 1..5 (5 = last), weekday 0..6 */
    int32_t time;   /* seconds after local midnight, may be <0 or >24h (v3) */
};

struct rule {
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    struct rule_date start, end;
    char std_abbr[16], dst_abbr[16];
};

static const char *p_abbr(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    if (*s == '<') {
        s++;
        while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
               (*s >= '0' && *s <= '9') || *s == '+' || *s == '-') {
            if (n + 1 >= cap)
                return NULL;
            out[n++] = *s++;
        }
        if (*s != '>' || n < 3)
            return NULL;
        s++;
    } else {
        while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')) {
            if (n + 1 >= cap)
                return NULL;
            out[n++] = *s++;
        }
        if (n < 3)
            return NULL;
    }
    out[n] = 0;
    return s;
}

static const char *p_num(const char *s, int lo, int hi, int *out)
{
    int v = 0, nd = 0;
    while (*s >= '0' && *s <= '9' && nd < 4) {
        v = v * 10 + (*s++ - '0');
        nd++;
    }
    if (nd == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return s;
}

/* [+-]hh[:mm[:ss]] → seconds (sign applied as written). */
static const char *p_hms(const char *s, int maxh, int32_t *out)
{
    int sign = 1, h, m = 0, sec = 0;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (!(s = p_num(s, 0, maxh, &h)))
        return NULL;
    if (*s == ':') {
        if (!(s = p_num(s + 1, 0, 59, &m)))
            return NULL;
        if (*s == ':' && !(s = p_num(s + 1, 0, 59, &sec)))
            return NULL;
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

static const char *p_date(const char *s, struct rule_date *d)
{
    memset(d, 0, sizeof *d);
    if (*s == 'M') {
        d->kind = 'M';
        if (!(s = p_num(s + 1, 1, 12, &d->m)) || *s != '.' ||
            !(s = p_num(s + 1, 1, 5, &d->w)) || *s != '.' ||
            !(s = p_num(s + 1, 0, 6, &d->d)))
            return NULL;
    } else if (*s == 'J') {
        d->kind = 'J';
        if (!(s = p_num(s + 1, 1, 365, &d->n)))
            return NULL;
    } else {
        d->kind = 'N';
        if (!(s = p_num(s, 0, 365, &d->n)))
            return NULL;
    }
    d->time = 2 * 3600;
    if (*s == '/' && !(s = p_hms(s + 1, 167, &d->time)))
        return NULL;
    return s;
}

/* Parse a whole TZ string; 0 on success. */
static int rule_parse(const char *s, struct rule *r)
{
    int32_t off;
    memset(r, 0, sizeof *r);
    if (!(s = p_abbr(s, r->std_abbr, sizeof r->std_abbr)) || !(s = p_hms(s, 24, &off)))
        return -1;
    r->std_off = -off; /* POSIX offsets are west-positive */
    r->dst_off = r->std_off;
    if (*s == 0)
        return 0;
    if (!(s = p_abbr(s, r->dst_abbr, sizeof r->dst_abbr)))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s != ',' && *s != 0) {
        if (!(s = p_hms(s, 24, &off)))
            return -1;
        r->dst_off = -off;
    }
    /* A DST zone with no rule means "implementation-defined" rules; tzdata
     * never writes that, so refuse and fall back to the last transition. */
    if (*s != ',' || !(s = p_date(s + 1, &r->start)) || *s != ',' ||
        !(s = p_date(s + 1, &r->end)) || *s != 0)
        return -1;
    return 0;
}

/* Local-midnight day number of a rule date in year y. */
static int64_t rule_day(const struct rule_date *d, int64_t y)
{
    int64_t jan1 = days_from_civil(y, 1, 1);
    switch (d->kind) {
    case 'J': /* 1..365, Feb 29 never counted */
        return jan1 + d->n - 1 + (is_leap(y) && d->n >= 60);
    case 'N': /* 0..365, Feb 29 counted */
        return jan1 + d->n;
    default: {
        int64_t first = days_from_civil(y, d->m, 1);
        int day = 1 + ((d->d - weekday(first)) + 7) % 7 + (d->w - 1) * 7;
        while (day > days_in_month(y, d->m))
            day -= 7;
        return first + day - 1;
    }
    }
}

static int rule_isdst(const struct rule *r, int64_t t)
{
    if (!r->has_dst)
        return 0;
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + r->std_off, 86400), &y, &m, &d);
    int64_t start = rule_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    int64_t end = rule_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
    if (start < end)
        return t >= start && t < end;
    return !(t >= end && t < start); /* southern hemisphere: DST spans new year */
}

/* ------------------------------------------------------------------ */
/* Zones                                                               */

struct ttinfo {
    int32_t off;
    uint8_t isdst;
    uint32_t abbr; /* index into chars */
};

struct zone {
    char *name;
    size_t ntrans, ntypes;
    int64_t *trans;
    uint8_t *tidx;
    struct ttinfo *types;
    char *chars;
    int has_rule;
    struct rule rule;
};

struct tzinfo {
    int32_t off;
    int isdst;
    const char *abbr;
};

static void zone_free(struct zone *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->trans);
    free(z->tidx);
    free(z->types);
    free(z->chars);
    free(z);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

struct tzhdr {
    uint8_t version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static int hdr_parse(const uint8_t *p, size_t n, struct tzhdr *h)
{
    if (n < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    h->version = p[4];
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    if (h->typecnt == 0 || h->typecnt > 256 || h->charcnt == 0 || h->charcnt > 4096 ||
        h->timecnt > 100000 || h->leapcnt > 100000 ||
        (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
        (h->isstdcnt != 0 && h->isstdcnt != h->typecnt))
        return -1;
    return 0;
}

static size_t block_size(const struct tzhdr *h, size_t tsize)
{
    return (size_t)h->timecnt * tsize + h->timecnt + (size_t)h->typecnt * 6 + h->charcnt +
           (size_t)h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

/* Decode TZif bytes into z.  Returns 0, ERR_NOTFOUND (not a valid TZif
 * file), ERR_NOMEM. */
static int zone_parse(const uint8_t *p, size_t n, struct zone *z)
{
    struct tzhdr h;
    size_t tsize = 4;
    if (hdr_parse(p, n, &h))
        return ERR_NOTFOUND;
    size_t bs = block_size(&h, 4);
    if (n - 44 < bs)
        return ERR_NOTFOUND;
    const uint8_t *end = p + n;
    if (h.version >= '2') {
        /* Skip the v1 block; everything we need is in the 64-bit one. */
        p += 44 + bs;
        if (hdr_parse(p, (size_t)(end - p), &h))
            return ERR_NOTFOUND;
        tsize = 8;
        bs = block_size(&h, 8);
        if ((size_t)(end - p) - 44 < bs)
            return ERR_NOTFOUND;
    }
    /* Leap-second ("right/") zones count TAI-like seconds, not POSIX time. */
    if (h.leapcnt)
        return ERR_NOTFOUND;
    const uint8_t *d = p + 44;
    z->ntrans = h.timecnt;
    z->ntypes = h.typecnt;
    z->trans = malloc((h.timecnt ? h.timecnt : 1) * sizeof *z->trans);
    z->tidx = malloc(h.timecnt ? h.timecnt : 1);
    z->types = malloc(h.typecnt * sizeof *z->types);
    z->chars = malloc((size_t)h.charcnt + 1);
    if (!z->trans || !z->tidx || !z->types || !z->chars)
        return ERR_NOMEM;
    for (size_t i = 0; i < h.timecnt; i++) {
        z->trans[i] = tsize == 8 ? be64(d + i * 8) : (int32_t)be32(d + i * 4);
        if (i && z->trans[i] <= z->trans[i - 1])
            return ERR_NOTFOUND;
    }
    d += (size_t)h.timecnt * tsize;
    for (size_t i = 0; i < h.timecnt; i++) {
        if (d[i] >= h.typecnt)
            return ERR_NOTFOUND;
        z->tidx[i] = d[i];
    }
    d += h.timecnt;
    for (size_t i = 0; i < h.typecnt; i++, d += 6) {
        int32_t off = (int32_t)be32(d);
        if (off < -OFF_MAX || off > OFF_MAX || d[4] > 1 || d[5] >= h.charcnt)
            return ERR_NOTFOUND;
        z->types[i] = (struct ttinfo){ off, d[4], d[5] };
    }
    memcpy(z->chars, d, h.charcnt);
    z->chars[h.charcnt] = 0;
    d += bs - ((size_t)h.timecnt * (tsize + 1) + (size_t)h.typecnt * 6);

    /* Footer: "\n" TZ "\n".  A missing or unparsable one is not an error;
     * the last transition's type then applies forever. */
    if (h.version >= '2' && d < end && *d == '\n') {
        const uint8_t *nl = memchr(d + 1, '\n', (size_t)(end - d - 1));
        size_t flen = nl ? (size_t)(nl - d - 1) : 0;
        char tzs[128];
        if (nl && flen > 0 && flen < sizeof tzs && !memchr(d + 1, 0, flen)) {
            memcpy(tzs, d + 1, flen);
            tzs[flen] = 0;
            z->has_rule = rule_parse(tzs, &z->rule) == 0;
        }
    }
    return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOMEM ? ERR_NOMEM : ERR_NOTFOUND;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < 44 || st.st_size > FILE_MAX) {
        close(fd);
        return ERR_NOTFOUND;
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *p = malloc(n);
    if (!p) {
        close(fd);
        return ERR_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *out = p;
    *outlen = got;
    return 0;
}

static int zone_load(const char *name, struct zone **out)
{
    char path[sizeof TZ_ZONEINFO_DIR + NAME_MAX_LEN + 2];
    snprintf(path, sizeof path, "%s/%s", TZ_ZONEINFO_DIR, name);
    uint8_t *data;
    size_t n;
    int rc = read_file(path, &data, &n);
    if (rc)
        return rc;
    struct zone *z = calloc(1, sizeof *z);
    if (!z) {
        free(data);
        return ERR_NOMEM;
    }
    rc = zone_parse(data, n, z);
    free(data);
    if (!rc && !(z->name = strdup(name)))
        rc = ERR_NOMEM;
    if (rc) {
        zone_free(z);
        return rc;
    }
    *out = z;
    return 0;
}

static void zone_at(const struct zone *z, int64_t t, struct tzinfo *o)
{
    const struct ttinfo *tt;
    if (z->ntrans == 0 || t >= z->trans[z->ntrans - 1]) {
        if (z->has_rule) {
            int dst = rule_isdst(&z->rule, t < -T_CLAMP ? -T_CLAMP : t > T_CLAMP ? T_CLAMP : t);
            o->off = dst ? z->rule.dst_off : z->rule.std_off;
            o->isdst = dst;
            o->abbr = dst ? z->rule.dst_abbr : z->rule.std_abbr;
            return;
        }
        tt = &z->types[z->ntrans ? z->tidx[z->ntrans - 1] : 0];
    } else if (t < z->trans[0]) {
        tt = &z->types[0]; /* RFC 8536: type 0 before the first transition */
    } else {
        size_t lo = 0, hi = z->ntrans - 1; /* trans[lo] <= t < trans[hi] */
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->trans[mid] <= t)
                lo = mid;
            else
                hi = mid;
        }
        tt = &z->types[z->tidx[lo]];
    }
    o->off = tt->off;
    o->isdst = tt->isdst;
    o->abbr = z->chars + tt->abbr;
}

/* ------------------------------------------------------------------ */
/* Cache: open addressing on FNV-1a, grows at 50% load.  The table only
 * holds names that loaded successfully, so it is bounded by the number of
 * files under the zoneinfo directory. */

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct zone **cache_tab;
static size_t cache_cap, cache_n;

static struct zone *cache_find_locked(const char *name, size_t *slot)
{
    if (!cache_cap)
        return NULL;
    size_t i = hash_fnv1a(name, strlen(name), HASH_FNV_INIT) & (cache_cap - 1);
    while (cache_tab[i]) {
        if (strcmp(cache_tab[i]->name, name) == 0)
            return cache_tab[i];
        i = (i + 1) & (cache_cap - 1);
    }
    if (slot)
        *slot = i;
    return NULL;
}

static int cache_grow_locked(void)
{
    size_t ncap = cache_cap ? cache_cap * 2 : 32;
    struct zone **nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return ERR_NOMEM;
    for (size_t i = 0; i < cache_cap; i++) {
        struct zone *z = cache_tab[i];
        if (!z)
            continue;
        size_t j = hash_fnv1a(z->name, strlen(z->name), HASH_FNV_INIT) & (ncap - 1);
        while (nt[j])
            j = (j + 1) & (ncap - 1);
        nt[j] = z;
    }
    free(cache_tab);
    cache_tab = nt;
    cache_cap = ncap;
    return 0;
}

static int zone_get(const char *name, const struct zone **out)
{
    pthread_mutex_lock(&cache_mu);
    struct zone *z = cache_find_locked(name, NULL);
    pthread_mutex_unlock(&cache_mu);
    if (z) {
        *out = z;
        return 0;
    }
    struct zone *nz;
    int rc = zone_load(name, &nz);
    if (rc)
        return rc;
    pthread_mutex_lock(&cache_mu);
    size_t slot = 0; /* set by cache_find_locked; -O2 cannot see it */
    z = cache_find_locked(name, NULL);
    if (!z) {
        if ((cache_n + 1) * 2 > cache_cap && (rc = cache_grow_locked())) {
            pthread_mutex_unlock(&cache_mu);
            zone_free(nz);
            return rc;
        }
        cache_find_locked(name, &slot);
        cache_tab[slot] = nz;
        cache_n++;
        z = nz;
        nz = NULL;
    }
    pthread_mutex_unlock(&cache_mu);
    zone_free(nz); /* lost a race: another thread loaded it first */
    *out = z;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */

/* "+02:00", "-0530", "+02" → 1 and the offset; 0 when not that form. */
static int parse_fixed(const char *s, int32_t *off)
{
    if (strcmp(s, "UTC") == 0 || strcmp(s, "Z") == 0) {
        *off = 0;
        return 1;
    }
    if (s[0] != '+' && s[0] != '-')
        return 0;
    const char *p = s + 1;
    int h, m = 0;
    if (!(p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9'))
        return -1;
    h = (p[0] - '0') * 10 + (p[1] - '0');
    p += 2;
    if (*p == ':')
        p++;
    if (*p) {
        if (!(p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9') || p[2])
            return -1;
        m = (p[0] - '0') * 10 + (p[1] - '0');
    } else if (p[-1] == ':') {
        return -1;
    }
    if (h > 23 || m > 59)
        return -1;
    *off = (s[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
    return 1;
}

static int name_valid(const char *s)
{
    size_t n = 0;
    if (!s || !*s || *s == '/')
        return 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '+' || c == '-' || c == '/'))
            return 0;
        if (c == '/' && p[1] == '/')
            return 0;
    }
    /* '.' is not an allowed character, so ".." cannot occur. */
    return n <= NAME_MAX_LEN && s[n - 1] != '/';
}

static int resolve(const char *zone, int64_t t, struct tzinfo *o)
{
    if (!zone)
        return ERR_INVAL;
    int32_t off;
    int f = parse_fixed(zone, &off);
    if (f < 0)
        return ERR_INVAL;
    if (f > 0) {
        o->off = off;
        o->isdst = 0;
        o->abbr = off == 0 ? "UTC" : ""; /* no static text for "+05:30" */
        return 0;
    }
    if (!name_valid(zone))
        return ERR_INVAL;
    const struct zone *z;
    int rc = zone_get(zone, &z);
    if (rc)
        return rc;
    zone_at(z, t, o);
    return 0;
}

int tz_check(const char *zone)
{
    struct tzinfo o;
    return resolve(zone, 0, &o);
}

int tz_offset(const char *zone, int64_t t, int *offset_sec)
{
    struct tzinfo o;
    int rc = resolve(zone, t, &o);
    if (rc)
        return rc;
    *offset_sec = o.off;
    return 0;
}

static int fill_tm(int64_t lt, struct tm *out)
{
    int64_t days = floor_div(lt, 86400), secs = lt - days * 86400, y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y - 1900 > INT_MAX || y - 1900 < INT_MIN)
        return ERR_INVAL;
    memset(out, 0, sizeof *out);
    out->tm_year = (int)(y - 1900);
    out->tm_mon = m - 1;
    out->tm_mday = d;
    out->tm_hour = (int)(secs / 3600);
    out->tm_min = (int)(secs / 60 % 60);
    out->tm_sec = (int)(secs % 60);
    out->tm_wday = weekday(days);
    out->tm_yday = (int)(days - days_from_civil(y, 1, 1));
    return 0;
}

int tz_local(const char *zone, int64_t t, struct tm *out)
{
    struct tzinfo o;
    int rc = resolve(zone, t, &o);
    if (rc)
        return rc;
    int64_t lt;
    if (__builtin_add_overflow(t, (int64_t)o.off, &lt) || lt > T_CLAMP || lt < -T_CLAMP)
        return ERR_INVAL;
    if ((rc = fill_tm(lt, out)))
        return rc;
    out->tm_isdst = o.isdst;
    out->tm_gmtoff = o.off;
    out->tm_zone = o.abbr;
    return 0;
}

int tz_from_local(const char *zone, int year, int mon, int mday, int hour, int min, int sec,
                  int64_t *out)
{
    if (year < 0 || year > 9999 || mon < 1 || mon > 12 || mday < 1 ||
        mday > days_in_month(year, mon) || hour < 0 || hour > 23 || min < 0 || min > 59 ||
        sec < 0 || sec > 59)
        return ERR_INVAL;
    int64_t lt = days_from_civil(year, mon, mday) * 86400 + hour * 3600 + min * 60 + sec;
    /* Try the offsets in force a day before and a day after: a candidate
     * is valid when the zone agrees with it at the resulting instant.  Of
     * two valid ones (a fall-back overlap) the earlier wins; with none (a
     * spring-forward gap) the offset from before the gap is used, which
     * lands the instant just after the gap, as mktime(tm_isdst = -1) does. */
    struct tzinfo before, after, chk;
    int rc = resolve(zone, lt - 86400, &before);
    if (rc || (rc = resolve(zone, lt + 86400, &after)))
        return rc;
    int64_t best = lt - before.off;
    int found = 0;
    const int32_t cand[2] = { before.off, after.off };
    for (int i = 0; i < 2; i++) {
        int64_t t = lt - cand[i];
        if (resolve(zone, t, &chk) == 0 && chk.off == cand[i] && (!found || t < best)) {
            best = t;
            found = 1;
        }
    }
    *out = best;
    return 0;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

int tz_parse_iso8601(const char *s, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, oh, om, off = 0;
    if (!s || !out)
        return ERR_INVAL;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return ERR_INVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return ERR_INVAL;
    const char *p = s + 10;
    if (*p) {
        if (*p != 'T' && *p != ' ')
            return ERR_INVAL;
        p++;
        if (!digits(p, 2, &h) || p[2] != ':' || !digits(p + 3, 2, &mi))
            return ERR_INVAL;
        p += 5;
        if (*p == ':') {
            if (!digits(p + 1, 2, &sec))
                return ERR_INVAL;
            p += 3;
            if (*p == '.' || *p == ',') {
                p++;
                if (*p < '0' || *p > '9')
                    return ERR_INVAL;
                while (*p >= '0' && *p <= '9')
                    p++; /* truncated: instants are whole seconds */
            }
        }
        if (h > 23 || mi > 59 || sec > 59)
            return ERR_INVAL;
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1;
            if (!digits(p + 1, 2, &oh))
                return ERR_INVAL;
            p += 3;
            if (*p == ':')
                p++;
            if (!digits(p, 2, &om))
                return ERR_INVAL;
            p += 2;
            if (oh > 23 || om > 59)
                return ERR_INVAL;
            off = sign * (oh * 3600 + om * 60);
        }
        if (*p)
            return ERR_INVAL;
    }
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
    return 0;
}

void tz_format_iso8601(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    if (!buf || !len)
        return;
    if (t > T_CLAMP || t < -T_CLAMP || fill_tm(t, &tm)) {
        buf[0] = 0;
        return;
    }
    snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02dZ", (long long)tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int tz_parse_duration(const char *s, int64_t *secs)
{
    if (!s || !secs || *s < '0' || *s > '9')
        return ERR_INVAL;
    int64_t n = 0, mult;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        int dgt = *p++ - '0';
        if (n > (INT64_MAX - dgt) / 10)
            return ERR_INVAL;
        n = n * 10 + dgt;
    }
    switch (*p) {
    case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    case 'w': mult = 7 * 86400; break;
    default: return ERR_INVAL;
    }
    int64_t v;
    if (p[1] || n < 1 || __builtin_mul_overflow(n, mult, &v))
        return ERR_INVAL;
    *secs = v;
    return 0;
}
