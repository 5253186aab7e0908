/* SPDX-License-Identifier: MIT */
/*
 * Internal: tinytown's two nickname tables (generated into nicknames.c by
 * scripts/gen-nicknames.py). Only agent.c reads them; the public way to get a
 * nickname is ttb_nickname_from_id().
 */
#ifndef TTB_NICKNAMES_H
#define TTB_NICKNAMES_H

/** Names in each table; the pick is (b0 * 256 + b1) % (2 * TTB_NICKNAMES_PER_LIST). */
#define TTB_NICKNAMES_PER_LIST 200

/** Popular US boys' names of the 1920s, in tinytown's order (indexes 0..199). */
extern const char *const ttb_nicknames_boys[TTB_NICKNAMES_PER_LIST];

/** Popular US girls' names of the 1920s, in tinytown's order (indexes 200..399). */
extern const char *const ttb_nicknames_girls[TTB_NICKNAMES_PER_LIST];

#endif
