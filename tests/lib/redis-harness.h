/* SPDX-License-Identifier: MIT */
#ifndef TTB_REDIS_HARNESS_H
#define TTB_REDIS_HARNESS_H
#endif
