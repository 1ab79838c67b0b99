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
/** Stop the clock at unix second `at` (clock_now() returns it, clock_now_ms()
 *  at * 1000) until clock_freeze(0) lets it run again from the offset.  For
 *  tests that probe a boundary to the second (a running clock may tick
 *  between setting it and the request that reads it). */
void clock_freeze(int64_t at);
/** The second the clock stands at, or 0 when it runs. */
int64_t clock_frozen(void);

#endif
