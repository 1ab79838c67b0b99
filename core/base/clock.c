/* clock.c — wall clock with a test offset, monotonic clock. */
#include "base/clock.h"
#include <stdatomic.h>
#include <time.h>

static _Atomic int64_t g_offset;
static _Atomic int64_t g_frozen; /* unix seconds the test clock stands at; 0 = running */

int64_t clock_now(void)
{
    int64_t f = atomic_load(&g_frozen);
    return f ? f : (int64_t)time(NULL) + atomic_load(&g_offset);
}

int64_t clock_now_ms(void)
{
    int64_t f = atomic_load(&g_frozen);
    if (f)
        return f * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + atomic_load(&g_offset) * 1000;
}

uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void clock_set_offset(int64_t seconds) { atomic_store(&g_offset, seconds); }
void clock_freeze(int64_t at) { atomic_store(&g_frozen, at); }
int64_t clock_frozen(void) { return atomic_load(&g_frozen); }
int64_t clock_get_offset(void) { return atomic_load(&g_offset); }
