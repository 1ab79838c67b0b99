#include "delivery/outbox.h"
