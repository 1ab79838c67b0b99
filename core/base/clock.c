/* clock.c — wall clock with a test offset, monotonic clock. */
#include "base/clock.h"
#include <stdatomic.h>
#include <time.h>

static _Atomic int64_t g_offset;

int64_t clock_now(void) { return (int64_t)time(NULL) + atomic_load(&g_offset); }

int64_t clock_now_ms(void)
{
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
int64_t clock_get_offset(void) { return atomic_load(&g_offset); }
