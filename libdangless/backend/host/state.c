/* SPDX-License-Identifier: MIT */
/* The host backend's state, shared by its files (host.h), which it keeps
 * below them all: no file of the backend reaches back into another. */
#include "host.h"

struct host_state host;
struct host_budget host_budget;
dl_lock_t host_maps_lock;
