/* SPDX-License-Identifier: MIT */
/**
 * @file send.h
 * @brief `tinytown-bridge send`: build a command, produce it, optionally await its result.
 */
#ifndef TINYTOWN_BRIDGE_SEND_H
#define TINYTOWN_BRIDGE_SEND_H

#include "tinytown_bridge/config.h"

/**
 * Runs the send subcommand with its own arguments (after "send"):
 * `OP [key=value ...] [--town T] [--id ID] [--wait-result] [--timeout MS]`.
 * @returns the process exit code: 0 sent (or ok result), 1 error result,
 * 2 usage error, 3 timeout or Kafka failure.
 */
int ttb_send_main(const ttb_config_t *config, int argc, char **argv);

#endif
