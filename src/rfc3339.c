/* SPDX-License-Identifier: MIT */
/* Placeholder: being written. */
#include "tinytown_bridge/rfc3339.h"
