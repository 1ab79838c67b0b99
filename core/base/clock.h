/*
 * clock.h — the server's notion of "now".
 *
 * clock_now() is wall-clock unix seconds plus an offset that tests may set
 * (only when the config enables `test_clock`), so schedules, quiet hours and
 * rolling windows can be tested without waiting.  Lock-free, any thread.
 */
#ifndef PROMOD_CLOCK_H
#define PROMOD_CLOCK_H
#include <stdint.h>

int64_t clock_now(void);
/** Milliseconds, same offset. */
int64_t clock_now_ms(void);
/** Monotonic nanoseconds (for latency measurement; no offset). */
uint64_t clock_mono_ns(void);
void clock_set_offset(int64_t seconds);
int64_t clock_get_offset(void);

#endif
