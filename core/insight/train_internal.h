/*
 * train_internal.h — what the train_*.c files share and nobody else uses.
 */
#ifndef PROMOD_TRAIN_INTERNAL_H
#define PROMOD_TRAIN_INTERNAL_H

/** Free a library model kept with keep_library_model (NULL is fine). */
void train_xgb_release_lib(void *lib);
void train_linear_release_lib(void *lib);

#endif
