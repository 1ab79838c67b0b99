/* predict.c — evaluation, contributions and the byte form of a trained
 * model (see predict.h for the semantics it reproduces). */
#include "engine/predict.h"
#include "base/err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct predict_model *predict_alloc(enum predict_kind kind, enum predict_link link, int nfeat,
                                    uint32_t ntrees, uint32_t nnodes)
{
    if (nfeat < 1 || nfeat > PREDICT_MAX_FEATURES ||
        (kind == PREDICT_TREES && (ntrees < 1 || ntrees > PREDICT_MAX_TREES ||
                                   nnodes < ntrees || nnodes > PREDICT_MAX_NODES)) ||
        (kind != PREDICT_TREES && kind != PREDICT_LINEAR) ||
        (link != PREDICT_LOGISTIC && link != PREDICT_IDENTITY))
        return NULL;
    struct predict_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->kind = kind;
    m->link = link;
    m->nfeat = nfeat;
    if (kind == PREDICT_TREES) {
        m->ntrees = ntrees;
        m->nnodes = nnodes;
        m->roots = calloc(ntrees, sizeof *m->roots);
        m->nodes = calloc(nnodes, sizeof *m->nodes);
        m->mean = calloc(nnodes, sizeof *m->mean);
        if (!m->roots || !m->nodes || !m->mean) {
            predict_free(m);
            return NULL;
        }
    } else {
        m->w = calloc((size_t)nfeat, sizeof *m->w);
        m->center = calloc((size_t)nfeat, sizeof *m->center);
        if (!m->w || !m->center) {
            predict_free(m);
            return NULL;
        }
    }
    return m;
}

void predict_free(struct predict_model *m)
{
    if (!m)
        return;
    free(m->roots);
    free(m->nodes);
    free(m->mean);
    free(m->walk);
    free(m->w);
    free(m->center);
    free(m);
}

int predict_check(struct predict_model *m, char *err, size_t errlen)
{
    if (!m || m->nfeat < 1 || m->nfeat > PREDICT_MAX_FEATURES) {
        snprintf(err, errlen, "feature count out of range");
        return ERR_INVAL;
    }
    if (m->link != PREDICT_LOGISTIC && m->link != PREDICT_IDENTITY) {
        snprintf(err, errlen, "unknown link function");
        return ERR_INVAL;
    }
    if (!isfinite(m->base)) {
        snprintf(err, errlen, "base margin is not finite");
        return ERR_INVAL;
    }
    if (m->kind == PREDICT_LINEAR) {
        for (int i = 0; i < m->nfeat; i++)
            if (!isfinite(m->w[i]) || !isfinite(m->center[i])) {
                snprintf(err, errlen, "weight %d is not finite", i);
                return ERR_INVAL;
            }
        return 0;
    }
    if (m->kind != PREDICT_TREES || m->ntrees < 1 || m->ntrees > PREDICT_MAX_TREES ||
        m->nnodes < m->ntrees || m->nnodes > PREDICT_MAX_NODES) {
        snprintf(err, errlen, "tree or node count out of range");
        return ERR_INVAL;
    }
    int maxdepth = 0;
    for (uint32_t t = 0; t < m->ntrees; t++) {
        uint32_t lo = m->roots[t], hi = t + 1 < m->ntrees ? m->roots[t + 1] : m->nnodes;
        if (lo >= hi || hi > m->nnodes || (t == 0 && lo != 0)) {
            snprintf(err, errlen, "tree %u: bad node range", t);
            return ERR_INVAL;
        }
        for (uint32_t i = lo; i < hi; i++) {
            const struct predict_node *n = &m->nodes[i];
            if (!isfinite(n->v) || !isfinite(m->mean[i])) {
                snprintf(err, errlen, "tree %u node %u: value is not finite", t, i - lo);
                return ERR_INVAL;
            }
            if (n->flags & PREDICT_LEAF)
                continue;
            /* children strictly after the parent and inside the tree: every
             * walk moves forward and stops at a leaf */
            if (n->feat >= m->nfeat || n->left <= i || n->left + 1 >= hi) {
                snprintf(err, errlen, "tree %u node %u: bad split", t, i - lo);
                return ERR_INVAL;
            }
        }
        /* depth: children come after their parent, so one pass suffices */
        uint32_t span = hi - lo;
        unsigned char *dep = calloc(span, 1);
        if (!dep) {
            snprintf(err, errlen, "out of memory");
            return ERR_NOMEM;
        }
        for (uint32_t i = lo; i < hi; i++) {
            const struct predict_node *n = &m->nodes[i];
            if (n->flags & PREDICT_LEAF) {
                if (dep[i - lo] > maxdepth)
                    maxdepth = dep[i - lo];
                continue;
            }
            if (dep[i - lo] >= 64) {
                snprintf(err, errlen, "tree %u: deeper than 64", t);
                free(dep);
                return ERR_INVAL;
            }
            dep[n->left - lo] = dep[n->left + 1 - lo] = (unsigned char)(dep[i - lo] + 1);
        }
        free(dep);
    }
    struct predict_wnode *w = realloc(m->walk, sizeof *w * m->nnodes);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return ERR_NOMEM;
    }
    for (uint32_t i = 0; i < m->nnodes; i++) {
        const struct predict_node *n = &m->nodes[i];
        if (n->flags & PREDICT_LEAF) { /* x < +inf for every finite x; NaN goes left */
            w[i] = (struct predict_wnode){ .v = INFINITY, .fd = 0x8000, .off = 0 };
            continue;
        }
        if (n->left - i > 0xffff) {
            snprintf(err, errlen, "node %u: children more than 65535 nodes away", i);
            return ERR_INVAL;
        }
        w[i] = (struct predict_wnode){
            .v = n->v, .fd = (uint16_t)(n->feat | (n->flags & PREDICT_DEFAULT_LEFT ? 0x8000 : 0)),
            .off = (uint16_t)(n->left - i) };
    }
    m->walk = w;
    m->maxdepth = maxdepth;
    return 0;
}

/* The leaf x reaches in the tree rooted at nodes[root]. */
static inline const struct predict_node *walk(const struct predict_node *nodes, uint32_t root,
                                              const float *x)
{
    const struct predict_node *n = nodes + root;
    while (!(n->flags & PREDICT_LEAF)) {
        float v = x[n->feat];
        /* NaN compares false: it goes right unless the node learnt left */
        unsigned left = (v < n->v) | (isnan(v) & ((n->flags & PREDICT_DEFAULT_LEFT) != 0));
        n = nodes + n->left + (1u - left);
    }
    return n;
}

/* One step of a lockstep walk: a leaf leads to itself. */
#define STEP(i)                                                                            \
    do {                                                                                   \
        const struct predict_wnode *n_ = w + (i);                                          \
        float v_ = x[n_->fd & 0x7fff];                                                     \
        unsigned l_ = (v_ < n_->v) | (isnan(v_) & (n_->fd >> 15));                         \
        (i) += n_->off + (1u - l_); /* a leaf: off 0 and always "left" */                 \
    } while (0)

double predict_margin(const struct predict_model *m, const float *x)
{
    if (m->kind == PREDICT_TREES) {
        float acc = (float)m->base;
        const struct predict_wnode *w = m->walk;
        const struct predict_node *nodes = m->nodes;
        const uint32_t *r = m->roots;
        uint32_t t = 0, nt = m->ntrees;
        int depth = m->maxdepth;
        for (; t + 8 <= nt; t += 8) {
            uint32_t i0 = r[t], i1 = r[t + 1], i2 = r[t + 2], i3 = r[t + 3], i4 = r[t + 4],
                     i5 = r[t + 5], i6 = r[t + 6], i7 = r[t + 7];
            for (int d = 0; d < depth; d++) {
                STEP(i0); STEP(i1); STEP(i2); STEP(i3);
                STEP(i4); STEP(i5); STEP(i6); STEP(i7);
            }
            /* in tree order, as XGBoost adds them */
            acc += nodes[i0].v;
            acc += nodes[i1].v;
            acc += nodes[i2].v;
            acc += nodes[i3].v;
            acc += nodes[i4].v;
            acc += nodes[i5].v;
            acc += nodes[i6].v;
            acc += nodes[i7].v;
        }
        for (; t < nt; t++)
            acc += walk(nodes, r[t], x)->v;
        return acc;
    }
    double acc = m->base;
    for (int i = 0; i < m->nfeat; i++)
        acc += m->w[i] * (isnan(x[i]) ? m->center[i] : (double)x[i]);
    return acc;
}

double predict_link_apply(const struct predict_model *m, double margin)
{
    if (m->link == PREDICT_IDENTITY)
        return margin;
    if (m->kind == PREDICT_TREES) /* XGBoost's own float sigmoid */
        return 1.0f / (1.0f + expf(-(float)margin));
    return 1.0 / (1.0 + exp(-margin));
}

double predict_eval(const struct predict_model *m, const float *x)
{
    return predict_link_apply(m, predict_margin(m, x));
}

void predict_contrib(const struct predict_model *m, const float *x, double *out)
{
    int nf = m->nfeat;
    for (int i = 0; i <= nf; i++)
        out[i] = 0;
    if (m->kind == PREDICT_LINEAR) {
        double bias = m->base;
        for (int i = 0; i < nf; i++) {
            bias += m->w[i] * m->center[i];
            if (!isnan(x[i]))
                out[i] = m->w[i] * ((double)x[i] - m->center[i]);
        }
        out[nf] = bias;
        return;
    }
    out[nf] = m->base;
    for (uint32_t t = 0; t < m->ntrees; t++) {
        uint32_t i = m->roots[t];
        float node_value = m->mean[i];
        out[nf] += node_value;
        while (!(m->nodes[i].flags & PREDICT_LEAF)) {
            const struct predict_node *n = &m->nodes[i];
            float v = x[n->feat];
            unsigned left = (v < n->v) | (isnan(v) & ((n->flags & PREDICT_DEFAULT_LEFT) != 0));
            i = n->left + (1u - left);
            float nv = m->nodes[i].flags & PREDICT_LEAF ? m->nodes[i].v : m->mean[i];
            out[n->feat] += nv - node_value;
            node_value = nv;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* byte form: "PRM1", kind u8, link u8, 2 zero bytes, nfeat u32, ntrees u32,
 * nnodes u32, base f64, then for trees roots[ntrees] u32, nodes (v f32,
 * feat u16, flags u8, pad u8, left u32) and mean[nnodes] f32; for linear
 * w[nfeat] f64 and center[nfeat] f64.  Little-endian as the host writes it:
 * the record lives in this machine's LMDB file, which is not portable
 * across byte orders either. */

#define MAGIC "PRM1"
#define HDR 28

static int put(struct buf *b, const void *p, size_t n)
{
    return buf_add(b, p, n);
}

int predict_save(const struct predict_model *m, struct buf *out)
{
    size_t start = out->len;
    unsigned char h[HDR] = { 0 };
    memcpy(h, MAGIC, 4);
    h[4] = (unsigned char)m->kind;
    h[5] = (unsigned char)m->link;
    uint32_t nf = (uint32_t)m->nfeat, nt = m->ntrees, nn = m->nnodes;
    memcpy(h + 8, &nf, 4);
    memcpy(h + 12, &nt, 4);
    memcpy(h + 16, &nn, 4);
    memcpy(h + 20, &m->base, 8);
    int rc = put(out, h, HDR);
    if (!rc && m->kind == PREDICT_TREES) {
        rc = put(out, m->roots, sizeof *m->roots * nt);
        for (uint32_t i = 0; !rc && i < nn; i++) {
            unsigned char n[12];
            const struct predict_node *p = &m->nodes[i];
            memcpy(n, &p->v, 4);
            memcpy(n + 4, &p->feat, 2);
            n[6] = p->flags;
            n[7] = 0;
            memcpy(n + 8, &p->left, 4);
            rc = put(out, n, sizeof n);
        }
        if (!rc)
            rc = put(out, m->mean, sizeof *m->mean * nn);
    } else if (!rc) {
        rc = put(out, m->w, sizeof *m->w * nf);
        if (!rc)
            rc = put(out, m->center, sizeof *m->center * nf);
    }
    if (rc) {
        out->len = start;
        if (out->p)
            out->p[start] = 0;
    }
    return rc;
}

int predict_load(const void *data, size_t len, struct predict_model **out, char *err,
                 size_t errlen)
{
    const unsigned char *p = data;
    *out = NULL;
    if (len < HDR || memcmp(p, MAGIC, 4)) {
        snprintf(err, errlen, "not a promod model (bad header)");
        return ERR_PARSE;
    }
    uint32_t nf, nt, nn;
    double base;
    memcpy(&nf, p + 8, 4);
    memcpy(&nt, p + 12, 4);
    memcpy(&nn, p + 16, 4);
    memcpy(&base, p + 20, 8);
    enum predict_kind kind = p[4];
    enum predict_link link = p[5];
    size_t need = HDR;
    if (kind == PREDICT_TREES)
        need += (size_t)nt * 4 + (size_t)nn * 12 + (size_t)nn * 4;
    else
        need += (size_t)nf * 16;
    if (nf < 1 || nf > PREDICT_MAX_FEATURES || nt > PREDICT_MAX_TREES ||
        nn > PREDICT_MAX_NODES || len != need) {
        snprintf(err, errlen, "model sizes do not match its length");
        return ERR_PARSE;
    }
    struct predict_model *m = predict_alloc(kind, link, (int)nf, nt, nn);
    if (!m) {
        snprintf(err, errlen, kind == PREDICT_TREES || kind == PREDICT_LINEAR
                                  ? "out of memory or bad sizes" : "unknown model kind");
        return kind == PREDICT_TREES || kind == PREDICT_LINEAR ? ERR_NOMEM : ERR_PARSE;
    }
    m->base = base;
    const unsigned char *q = p + HDR;
    if (kind == PREDICT_TREES) {
        memcpy(m->roots, q, (size_t)nt * 4);
        q += (size_t)nt * 4;
        for (uint32_t i = 0; i < nn; i++, q += 12) {
            struct predict_node *n = &m->nodes[i];
            memcpy(&n->v, q, 4);
            memcpy(&n->feat, q + 4, 2);
            n->flags = q[6];
            memcpy(&n->left, q + 8, 4);
        }
        memcpy(m->mean, q, (size_t)nn * 4);
    } else {
        memcpy(m->w, q, (size_t)nf * 8);
        memcpy(m->center, q + (size_t)nf * 8, (size_t)nf * 8);
    }
    if (predict_check(m, err, errlen)) {
        predict_free(m);
        return ERR_PARSE;
    }
    *out = m;
    return 0;
}
