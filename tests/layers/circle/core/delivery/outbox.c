#include "delivery/sends.h"
