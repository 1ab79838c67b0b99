/* train_sched.c — the trainer thread: trainings off the request path, one
 * at a time, queued by POST /api/v1/models/{id}/train or due by a model's
 * `retrain` schedule. */
#include "insight/train.h"
#include "base/app.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/reqerr.h"
#include "engine/models.h"
#include "store/store.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX 256
#define SCHEDULE_EVERY_S 30

struct job {
    char id[132];
    int force;
    char actor[132];
    char trigger[16];
    int64_t queued_at;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int running;          /* the thread exists */
    int stop;
    volatile int cancel;  /* read by the training in progress */
    struct app *app;
    struct job q[QUEUE_MAX];
    int nq;
    struct job cur;       /* the training in progress (cur.id[0] = 0: none) */
    int64_t cur_since;
} S = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

/* With S.mu held. */
static int queued_or_running(const char *id)
{
    if (!strcmp(S.cur.id, id))
        return 2;
    for (int i = 0; i < S.nq; i++)
        if (!strcmp(S.q[i].id, id))
            return 1;
    return 0;
}

static int push(const char *id, int force, const char *actor, const char *trigger)
{
    if (queued_or_running(id))
        return ERR_EXISTS;
    if (S.nq >= QUEUE_MAX)
        return ERR_BUSY;
    struct job *j = &S.q[S.nq++];
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    j->force = force;
    snprintf(j->actor, sizeof j->actor, "%s", actor ? actor : "");
    snprintf(j->trigger, sizeof j->trigger, "%s", trigger);
    j->queued_at = clock_now();
    pthread_cond_signal(&S.cv);
    return 0;
}

/* Queue every model whose schedule is due (its last attempt is older than
 * its retrain period, or it was never trained). */
static void schedule(void)
{
    struct models_gen *g = models_gen_acquire();
    struct store_txn *t = NULL;
    if (!g || store_rtxn_begin(S.app->store, &t)) {
        models_gen_release(g);
        return;
    }
    int64_t now = clock_now();
    char due[64][132];
    int ndue = 0;
    for (int i = 0; i < g->n && ndue < 64; i++) {
        const struct models_entry *e = &g->m[i];
        if (!e->def || e->def->retrain <= 0)
            continue;
        json_t *st = models_store_state_get(t, e->id);
        int64_t last = st ? json_integer_value(json_object_get(st, "at")) : 0;
        json_decref(st);
        if (!last || now - last >= e->def->retrain)
            snprintf(due[ndue++], sizeof due[0], "%s", e->id);
    }
    store_txn_end(t);
    models_gen_release(g);
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < ndue; i++)
        if (push(due[i], 0, NULL, "schedule") == 0)
            log_info("model training scheduled", "model=\"%s\"", due[i]);
    pthread_mutex_unlock(&S.mu);
}

static void *run(void *arg)
{
    (void)arg;
    struct timespec next = { 0, 0 };
    pthread_mutex_lock(&S.mu);
    while (!S.stop) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec >= next.tv_sec) {
            pthread_mutex_unlock(&S.mu);
            schedule();
            pthread_mutex_lock(&S.mu);
            clock_gettime(CLOCK_REALTIME, &next);
            next.tv_sec += SCHEDULE_EVERY_S;
        }
        if (!S.nq) {
            pthread_cond_timedwait(&S.cv, &S.mu, &next);
            continue;
        }
        S.cur = S.q[0];
        memmove(S.q, S.q + 1, sizeof *S.q * (size_t)(S.nq - 1));
        S.nq--;
        S.cur_since = clock_now();
        pthread_mutex_unlock(&S.mu);
        struct train_opts o = { .force = S.cur.force, .actor = S.cur.actor[0] ? S.cur.actor : NULL,
                                .trigger = S.cur.trigger, .cancel = &S.cancel };
        json_t *res = NULL;
        struct reqerr e = { 0 };
        train_model(S.app, S.cur.id, &o, &res, &e);
        json_decref(res);
        reqerr_clear(&e);
        pthread_mutex_lock(&S.mu);
        S.cur.id[0] = 0;
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

int train_sched_start(struct app *app)
{
    pthread_mutex_lock(&S.mu);
    S.app = app;
    S.stop = 0;
    S.cancel = 0;
    S.nq = 0;
    S.cur.id[0] = 0;
    int rc = pthread_create(&S.th, NULL, run, NULL);
    S.running = rc == 0;
    pthread_mutex_unlock(&S.mu);
    return rc ? ERR_NOMEM : 0;
}

void train_sched_stop(void)
{
    pthread_mutex_lock(&S.mu);
    if (!S.running) {
        pthread_mutex_unlock(&S.mu);
        return;
    }
    S.stop = 1;
    S.cancel = 1;
    pthread_cond_signal(&S.cv);
    pthread_mutex_unlock(&S.mu);
    pthread_join(S.th, NULL);
    S.running = 0;
}

static json_t *status_locked(const char *id)
{
    json_t *o = json_object();
    int q = queued_or_running(id);
    json_object_set_new(o, "state", json_string(q == 2 ? "running" : q == 1 ? "queued" : "idle"));
    if (q == 2)
        json_object_set_new(o, "since", json_integer(S.cur_since));
    return o;
}

int train_sched_enqueue(const char *id, int force, const char *actor, json_t **status)
{
    *status = NULL;
    struct models_gen *g = models_gen_acquire();
    int known = models_gen_find(g, id) >= 0;
    models_gen_release(g);
    if (!known)
        return ERR_NOTFOUND;
    pthread_mutex_lock(&S.mu);
    int rc = S.running && !S.stop ? push(id, force, actor, "api") : ERR_BUSY;
    *status = status_locked(id);
    pthread_mutex_unlock(&S.mu);
    return rc;
}

json_t *train_sched_status(struct app *app, const char *id)
{
    pthread_mutex_lock(&S.mu);
    json_t *o = status_locked(id);
    pthread_mutex_unlock(&S.mu);
    struct store_txn *t;
    json_t *last = NULL;
    if (app && app->store && store_rtxn_begin(app->store, &t) == 0) {
        last = models_store_state_get(t, id);
        store_txn_end(t);
    }
    json_object_set_new(o, "last", last ? last : json_null());
    return o;
}
