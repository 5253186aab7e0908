/* SPDX-License-Identifier: MIT */
/**
 * @file config.h
 * @brief The bridge's configuration: file (libconfig), environment, flags.
 *
 * Every setting is described once, in a table (name, type, range, default,
 * environment variable, help). Values are applied in order: built-in
 * defaults, then the file, then the environment (`TT_BRIDGE_…`), then
 * command-line flags; the result is validated as a whole and kept in an
 * immutable ttb_config_t. librdkafka properties pass through untouched.
 * Secrets (Redis password, SASL password) are read from the environment or
 * from files and are never logged; ttb_config_dump() redacts them.
 */
#ifndef TINYTOWN_BRIDGE_CONFIG_H
#define TINYTOWN_BRIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tinytown_bridge/command.h"
#include "tinytown_bridge/store.h"

/** A librdkafka property to pass through. */
typedef struct ttb_kv {
    char *key;
    char *value;
} ttb_kv_t;

typedef struct ttb_config {
    /* redis */
    char *redis_url;          /**< redis://[user[:password]@]host[:port][/db]; password stripped into redis.password */
    char *redis_url_redacted; /**< the URL with the password as **** (for logs and `status`) */
    ttb_redis_opts_t redis;   /**< parsed from the URL, password from URL/env/file; strings owned here */

    /* kafka */
    char *brokers;            /**< bootstrap.servers; NULL/"" means "start nothing, use what scripts/run gave" is not allowed: required */
    char *group_id;           /**< default "tinytown-bridge" */
    char *commands_topic;     /**< default "tinytown.commands" */
    char *results_topic;      /**< default "tinytown.results" */
    char *events_topic;       /**< default "tinytown.events" */
    char *dlq_topic;          /**< default "tinytown.commands.dlq" */
    bool create_topics;       /**< create missing topics at start, default false */
    int topic_partitions;     /**< partitions of created topics, default 4 */
    bool exactly_once;        /**< Kafka transactions (results+offsets, events+position), default false */
    char *transactional_id;   /**< exactly_once: the bridge's transactional.id; NULL: one per process */
    ttb_kv_t *kafka_props;    /**< passed to consumer and producer (e.g. security.protocol) */
    size_t nkafka_props;
    ttb_kv_t *consumer_props; /**< consumer only */
    size_t nconsumer_props;
    ttb_kv_t *producer_props; /**< producer only */
    size_t nproducer_props;
    /* Kafka security: first-class settings that ttb_kafka_conf() gives every
     * client as librdkafka properties (before kafka_props, which may override).
     * NULL = not set. The passwords are the effective ones: a *_file wins. */
    char *kafka_security_protocol; /**< security.protocol: plaintext, ssl, sasl_[plaintext|ssl] */
    char *kafka_sasl_mechanism;    /**< sasl.mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 */
    char *kafka_sasl_username;     /**< sasl.username */
    char *kafka_sasl_password;     /**< sasl.password (secret) */
    char *kafka_ssl_ca_location;   /**< ssl.ca.location: CA file or directory */
    char *kafka_ssl_certificate_location; /**< ssl.certificate.location: client cert (mTLS) */
    char *kafka_ssl_key_location;  /**< ssl.key.location: its private key */
    char *kafka_ssl_key_password;  /**< ssl.key.password (secret) */

    /* bridge */
    char **towns;             /**< allowed towns (at least one) */
    size_t ntowns;
    char *default_town;       /**< NULL: commands must name a town; else one of towns */
    char *default_cli;        /**< default "claude" */
    size_t max_record_bytes;  /**< default 65536 */
    int64_t max_wait_ms;      /**< default 3600000 (1 h) */
    bool op_denied[TTB_OP__COUNT]; /**< from `denied_ops` */
    size_t batch_size;        /**< records per batch, default 500 */
    int batch_timeout_ms;     /**< how long to gather a batch, default 5 */
    size_t max_in_flight;     /**< commands awaiting results (not pending waits), default 10000 */
    size_t max_pending_waits; /**< default 100000 */
    int wait_sweep_interval_ms; /**< default 10000 */
    int directory_reconcile_ms; /**< default 300000; 0 = never */
    int64_t idempotency_ttl_s;/**< default 604800 (7 days) */
    unsigned scan_count;      /**< default 1000 */
    int wait_check_interval_ms; /**< default 500 */
    int shutdown_timeout_ms;  /**< bound on a graceful stop, default 10000 */
    int redis_backoff_max_ms; /**< cap of the reconnect backoff, default 5000 */
    bool allow_mismatched_peers; /**< start although the group's bridges disagree, default false */

    /* events (relay and capture) */
    bool relay_enabled;       /**< default true */
    int relay_lease_ms;       /**< default 10000 */
    bool capture_enabled;     /**< default true */
    int reconcile_interval_ms;/**< default 5000 */
    bool cloudevents;         /**< add ce_* headers, default false */
    char *cloudevents_source; /**< default "tinytown-bridge" */

    /* operations */
    char *http_listen;        /**< host:port, NULL = off */
    int log_level;            /**< ttb_log_level_t, default info */
    int summary_interval_s;   /**< periodic info summary, default 30; 0 = off */
} ttb_config_t;

/** Where to read from. Strings are borrowed. */
typedef struct ttb_config_source {
    const char *path;            /**< config file, or NULL for none */
    char *const *environ;        /**< environment (NULL = the process's) */
    const char *const *sets;     /**< "section.name=value" overrides from --set, in order */
    size_t nsets;
    const char *const *kafka_sets; /**< "prop=value" from -X, in order (go to kafka_props) */
    size_t nkafka_sets;
} ttb_config_source_t;

/**
 * Builds the configuration. @returns 0 and a new config in *out (caller
 * frees with ttb_config_free()), or TTB_ERR_INVALID / TTB_ERR_NOMEM with one
 * clear line in @p errstr (`FILE:LINE: setting: problem` for file errors,
 * `TT_BRIDGE_X: problem` for the environment, `--set x: problem` for flags).
 */
int ttb_config_load(const ttb_config_source_t *src, ttb_config_t **out, char *errstr,
                    size_t errstr_size);

/** Frees. Accepts NULL. Wipes secrets. */
void ttb_config_free(ttb_config_t *config);

/** Fills a command policy that borrows from @p config. */
void ttb_config_policy(const ttb_config_t *config, ttb_command_policy_t *policy);

/** Writes the effective configuration in libconfig syntax, secrets redacted. */
void ttb_config_dump(const ttb_config_t *config, FILE *fp);

/** Writes the list of settings with their env names, defaults and help. */
void ttb_config_help(FILE *fp);

/**
 * The value librdkafka gets for the property @p prop: a kafka.properties
 * entry (applied last, so it wins) or else @p setting, the first-class
 * setting's value. Borrowed from @p config; NULL when neither is set.
 */
const char *ttb_config_kafka_effective(const ttb_config_t *config, const char *prop,
                                       const char *setting);

/**
 * Redacts the password of a Redis URL ("redis://u:pw@h:1/0" → "redis://u:****@h:1/0").
 * @returns a new string (caller frees) or NULL on NOMEM.
 */
char *ttb_redis_url_redact(const char *url);

#endif
