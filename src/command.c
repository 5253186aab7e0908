/* SPDX-License-Identifier: MIT */
/* Placeholder: being written. */
#include "tinytown_bridge/command.h"
