/* SPDX-License-Identifier: MIT */
/*
 * Configuration. Every setting the bridge has is one row of `settings[]`:
 * its name as written in the file ("section.name"), its type and range, its
 * default, its environment variable and a line of help. Loading runs layers
 * over that one table (built-in defaults, the libconfig file, the
 * environment, --set flags, then -X librdkafka pairs) and checks each value
 * against its row the moment it is applied, so an error can say exactly
 * where the bad value came from (`file:line`, `TT_BRIDGE_X`, `--set x`).
 * What involves several settings (the default town is one of the towns,
 * topics are distinct, the Redis password's three sources) is settled once
 * at the end, on the effective values, still naming where each came from.
 * The help text, the dump and the documentation read the same table, so
 * they cannot drift apart.
 *
 * Secrets: the Redis password, the Kafka SASL and key passwords and
 * librdkafka properties that look like credentials are never echoed in an
 * error, are written as "****" by the dump, and every string is wiped before
 * it is freed. Each first-class secret has a *_file twin that wins.
 */
#include "tinytown_bridge/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/log.h"

/* The public struct plus the storage behind its borrowed `redis` strings,
 * which are const in ttb_redis_opts_t and so cannot be freed through it.
 * `pub` comes first so that a ttb_config_t * is also a config_priv_t *. */
typedef struct config_priv {
    ttb_config_t pub;
    char *redis_host;
    char *redis_username;
    char *redis_password;   /* the effective password, whichever source won */
    char *password_setting; /* redis.password as configured */
    char *password_file;    /* redis.password_file as configured */
    char *sasl_password_file;    /* kafka.sasl_password_file as configured */
    char *ssl_key_password_file; /* kafka.ssl_key_password_file as configured */
    char *username_setting; /* redis.username as configured */
    char *tls_ca_file;      /* redis.tls_*: borrowed by pub.redis at the end */
    char *tls_ca_dir;
    char *tls_cert_file;
    char *tls_key_file;
    char *tls_server_name;
    bool tls_verify;
} config_priv_t;

/* How a setting's value is stored; the type shown to users follows from it. */
typedef enum setting_kind {
    KIND_STRING, /* char * */
    KIND_LEVEL,  /* int holding a ttb_log_level_t, written as its name */
    KIND_INT,    /* int */
    KIND_INT64,  /* int64_t */
    KIND_SIZE,   /* size_t */
    KIND_UINT,   /* unsigned */
    KIND_BOOL,   /* bool */
    KIND_LIST,   /* char ** at off, size_t count at off_count; replaced as a whole */
    KIND_OPS,    /* bool[TTB_OP__COUNT] at off, from a list of op names */
    KIND_KV      /* ttb_kv_t * at off, size_t count at off_count; merged key by key */
} setting_kind_t;

enum {
    F_OPTIONAL = 1u << 0, /* "" means unset (NULL); otherwise "" is an error */
    F_SECRET = 1u << 1,   /* never echoed, dumped as "****" */
    F_TOKEN = 1u << 2,    /* 1-64 bytes of [A-Za-z0-9._-]: spliced into Redis keys */
    F_TOPIC = 1u << 3,    /* a Kafka topic name */
    F_LISTEN = 1u << 4,   /* [host]:port */
    F_REDIS_URL = 1u << 5 /* redis://... */
};

typedef struct setting {
    const char *name; /* "section.name", as in the file */
    setting_kind_t kind;
    size_t off;
    size_t off_count;
    int64_t min, max; /* integers only */
    const char *def;  /* the default in --set syntax ("" = unset or empty list) */
    const char *env;
    unsigned flags;
    const char *help;
    const char *const *choices; /* strings only: the accepted values (any case), NULL-ended */
} setting_t;

#define AT(field) offsetof(config_priv_t, field)

/* Values librdkafka accepts that the first-class Kafka settings offer. */
static const char *const security_protocols[] = {"plaintext", "ssl", "sasl_plaintext",
                                                 "sasl_ssl", NULL};
static const char *const sasl_mechanisms[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", NULL};

#define MIB (1024 * 1024)
#define DAY_S (24 * 3600)
#define DAY_MS (DAY_S * INT64_C(1000))

/* One row per setting, kept in the order of the example file. */
/* clang-format off */
static const setting_t settings[] = {
    /* redis */
    {.name = "redis.url", .kind = KIND_STRING, .off = AT(pub.redis_url),
     .def = "redis://127.0.0.1:6379", .env = "TT_BRIDGE_REDIS_URL", .flags = F_REDIS_URL,
     .help = "The town's Redis: redis://[user[:password]@]host[:port][/db], or rediss://... for "
             "TLS (see the tls_* settings). A password here is the last resort (password_file "
             "and password win)."},
    {.name = "redis.password", .kind = KIND_STRING, .off = AT(password_setting), .def = "",
     .env = "TT_BRIDGE_REDIS_PASSWORD", .flags = F_OPTIONAL | F_SECRET,
     .help = "Redis password (AUTH); wins over a password in url. Prefer the environment or "
             "password_file to writing it in a file."},
    {.name = "redis.password_file", .kind = KIND_STRING, .off = AT(password_file), .def = "",
     .env = "TT_BRIDGE_REDIS_PASSWORD_FILE", .flags = F_OPTIONAL,
     .help = "File holding the Redis password (one trailing newline is stripped), e.g. a Docker "
             "or Kubernetes secret; wins over password and url."},
    {.name = "redis.username", .kind = KIND_STRING, .off = AT(username_setting), .def = "",
     .env = "TT_BRIDGE_REDIS_USERNAME", .flags = F_OPTIONAL,
     .help = "Redis ACL user (AUTH user password); wins over a user in url. Unset: the default "
             "user. README \"Security\" has the ACL the bridge needs."},
    {.name = "redis.tls_ca_file", .kind = KIND_STRING, .off = AT(tls_ca_file), .def = "",
     .env = "TT_BRIDGE_REDIS_TLS_CA_FILE", .flags = F_OPTIONAL,
     .help = "rediss://: PEM file of the CAs trusted to sign the server's certificate. Unset "
             "(and no tls_ca_dir): the system's CAs."},
    {.name = "redis.tls_ca_dir", .kind = KIND_STRING, .off = AT(tls_ca_dir), .def = "",
     .env = "TT_BRIDGE_REDIS_TLS_CA_DIR", .flags = F_OPTIONAL,
     .help = "rediss://: directory of trusted CA certificates, named by hash (openssl rehash)."},
    {.name = "redis.tls_cert_file", .kind = KIND_STRING, .off = AT(tls_cert_file), .def = "",
     .env = "TT_BRIDGE_REDIS_TLS_CERT_FILE", .flags = F_OPTIONAL,
     .help = "rediss://: PEM client certificate (chain), for servers that require one "
             "(tls-auth-clients)."},
    {.name = "redis.tls_key_file", .kind = KIND_STRING, .off = AT(tls_key_file), .def = "",
     .env = "TT_BRIDGE_REDIS_TLS_KEY_FILE", .flags = F_OPTIONAL,
     .help = "rediss://: the client certificate's private key (PEM, unencrypted; a secrets "
             "file). Unset: read from tls_cert_file."},
    {.name = "redis.tls_server_name", .kind = KIND_STRING, .off = AT(tls_server_name), .def = "",
     .env = "TT_BRIDGE_REDIS_TLS_SERVER_NAME", .flags = F_OPTIONAL,
     .help = "rediss://: the name the server's certificate must carry (DNS name or IP "
             "address), also sent as SNI. Unset: the url's host."},
    {.name = "redis.tls_verify", .kind = KIND_BOOL, .off = AT(tls_verify), .def = "true",
     .env = "TT_BRIDGE_REDIS_TLS_VERIFY",
     .help = "rediss://: check the server's certificate and name. false only encrypts (anyone "
             "in the path can pose as the server) and logs a warning."},
    {.name = "redis.connect_timeout_ms", .kind = KIND_INT, .off = AT(pub.redis.connect_timeout_ms),
     .min = 1, .max = 600000, .def = "2000", .env = "TT_BRIDGE_REDIS_CONNECT_TIMEOUT_MS",
     .help = "Bound on connecting to Redis, in milliseconds."},
    {.name = "redis.command_timeout_ms", .kind = KIND_INT, .off = AT(pub.redis.command_timeout_ms),
     .min = 1, .max = 600000, .def = "5000", .env = "TT_BRIDGE_REDIS_COMMAND_TIMEOUT_MS",
     .help = "Bound on one Redis round trip, in milliseconds; past it the connection counts "
             "as lost."},

    /* kafka */
    {.name = "kafka.brokers", .kind = KIND_STRING, .off = AT(pub.brokers), .def = "127.0.0.1:9092",
     .env = "TT_BRIDGE_KAFKA_BROKERS",
     .help = "Kafka bootstrap servers (bootstrap.servers), comma-separated host:port."},
    {.name = "kafka.group_id", .kind = KIND_STRING, .off = AT(pub.group_id),
     .def = "tinytown-bridge", .env = "TT_BRIDGE_KAFKA_GROUP_ID",
     .help = "Consumer group of the commands consumer; bridges sharing it share the partitions."},
    {.name = "kafka.commands_topic", .kind = KIND_STRING, .off = AT(pub.commands_topic),
     .def = "tinytown.commands", .env = "TT_BRIDGE_KAFKA_COMMANDS_TOPIC", .flags = F_TOPIC,
     .help = "Topic the command records are read from."},
    {.name = "kafka.results_topic", .kind = KIND_STRING, .off = AT(pub.results_topic),
     .def = "tinytown.results", .env = "TT_BRIDGE_KAFKA_RESULTS_TOPIC", .flags = F_TOPIC,
     .help = "Topic one result record per command is written to; must differ from commands_topic."},
    {.name = "kafka.events_topic", .kind = KIND_STRING, .off = AT(pub.events_topic),
     .def = "tinytown.events", .env = "TT_BRIDGE_KAFKA_EVENTS_TOPIC", .flags = F_TOPIC,
     .help = "Topic the towns' event streams are relayed to; must differ from commands_topic."},
    {.name = "kafka.dlq_topic", .kind = KIND_STRING, .off = AT(pub.dlq_topic),
     .def = "tinytown.commands.dlq", .env = "TT_BRIDGE_KAFKA_DLQ_TOPIC", .flags = F_TOPIC,
     .help = "Dead-letter topic for records that cannot be commands; must differ from "
             "commands_topic."},
    {.name = "kafka.create_topics", .kind = KIND_BOOL, .off = AT(pub.create_topics),
     .def = "false", .env = "TT_BRIDGE_KAFKA_CREATE_TOPICS",
     .help = "Create missing topics at start (else a missing topic stops the bridge with an "
             "error naming it)."},
    {.name = "kafka.topic_partitions", .kind = KIND_INT, .off = AT(pub.topic_partitions),
     .min = 1, .max = 10000, .def = "4", .env = "TT_BRIDGE_KAFKA_TOPIC_PARTITIONS",
     .help = "Partitions of topics the bridge creates (the replication factor is the "
             "broker's default)."},
    {.name = "kafka.exactly_once", .kind = KIND_BOOL, .off = AT(pub.exactly_once),
     .def = "false", .env = "TT_BRIDGE_KAFKA_EXACTLY_ONCE",
     .help = "Kafka transactions: results, dead letters and the consumed offsets commit in one "
             "transaction, events and the relay's position in another, so read_committed "
             "consumers see each exactly once (needs a real Kafka broker; README, Delivery "
             "guarantees)."},
    {.name = "kafka.transactional_id", .kind = KIND_STRING, .off = AT(pub.transactional_id),
     .def = "", .env = "TT_BRIDGE_KAFKA_TRANSACTIONAL_ID", .flags = F_OPTIONAL,
     .help = "With exactly_once: this bridge's transactional.id, stable across its restarts and "
             "unique in the group (e.g. a StatefulSet pod name), so a restart aborts what its "
             "predecessor left open at once. Unset: one per process (a crashed bridge's open "
             "transaction then holds read_committed readers back for transaction.timeout.ms)."},
    {.name = "kafka.properties", .kind = KIND_KV, .off = AT(pub.kafka_props),
     .off_count = AT(pub.nkafka_props), .def = "", .env = "TT_BRIDGE_KAFKA_PROPERTIES",
     .help = "librdkafka properties for every client, as \"name=value\" strings (the environment "
             "takes \"k=v,k=v\"). Merged key by key over the layers; TT_BRIDGE_RDKAFKA_<NAME> "
             "and -X add more."},
    {.name = "kafka.consumer_properties", .kind = KIND_KV, .off = AT(pub.consumer_props),
     .off_count = AT(pub.nconsumer_props), .def = "", .env = "TT_BRIDGE_KAFKA_CONSUMER_PROPERTIES",
     .help = "librdkafka properties for the consumer only (applied after properties)."},
    {.name = "kafka.producer_properties", .kind = KIND_KV, .off = AT(pub.producer_props),
     .off_count = AT(pub.nproducer_props), .def = "", .env = "TT_BRIDGE_KAFKA_PRODUCER_PROPERTIES",
     .help = "librdkafka properties for the producers only (applied after properties)."},
    {.name = "kafka.security_protocol", .kind = KIND_STRING, .off = AT(pub.kafka_security_protocol),
     .def = "", .env = "TT_BRIDGE_KAFKA_SECURITY_PROTOCOL", .flags = F_OPTIONAL,
     .choices = security_protocols,
     .help = "security.protocol of every Kafka client: plaintext, ssl (TLS, with a client "
             "certificate for mTLS), sasl_plaintext or sasl_ssl. Unset: plaintext."},
    {.name = "kafka.sasl_mechanism", .kind = KIND_STRING, .off = AT(pub.kafka_sasl_mechanism),
     .def = "", .env = "TT_BRIDGE_KAFKA_SASL_MECHANISM", .flags = F_OPTIONAL,
     .choices = sasl_mechanisms,
     .help = "SASL mechanism (sasl.mechanisms): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."},
    {.name = "kafka.sasl_username", .kind = KIND_STRING, .off = AT(pub.kafka_sasl_username),
     .def = "", .env = "TT_BRIDGE_KAFKA_SASL_USERNAME", .flags = F_OPTIONAL,
     .help = "SASL user name (sasl.username); needs a sasl_* security_protocol and a password."},
    {.name = "kafka.sasl_password", .kind = KIND_STRING, .off = AT(pub.kafka_sasl_password),
     .def = "", .env = "TT_BRIDGE_KAFKA_SASL_PASSWORD", .flags = F_OPTIONAL | F_SECRET,
     .help = "SASL password (sasl.password). Prefer the environment or sasl_password_file to "
             "writing it in a file."},
    {.name = "kafka.sasl_password_file", .kind = KIND_STRING, .off = AT(sasl_password_file),
     .def = "", .env = "TT_BRIDGE_KAFKA_SASL_PASSWORD_FILE", .flags = F_OPTIONAL,
     .help = "File holding the SASL password (one trailing newline is stripped), e.g. a Docker "
             "or Kubernetes secret; wins over sasl_password."},
    {.name = "kafka.ssl_ca_location", .kind = KIND_STRING, .off = AT(pub.kafka_ssl_ca_location),
     .def = "", .env = "TT_BRIDGE_KAFKA_SSL_CA_LOCATION", .flags = F_OPTIONAL,
     .help = "PEM file or directory of the CA certificates that sign the brokers' certificates "
             "(ssl.ca.location). Unset: the system's CA store."},
    {.name = "kafka.ssl_certificate_location", .kind = KIND_STRING,
     .off = AT(pub.kafka_ssl_certificate_location), .def = "",
     .env = "TT_BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION", .flags = F_OPTIONAL,
     .help = "PEM file of the client certificate for brokers that require one (mTLS, "
             "ssl.certificate.location); needs ssl_key_location."},
    {.name = "kafka.ssl_key_location", .kind = KIND_STRING, .off = AT(pub.kafka_ssl_key_location),
     .def = "", .env = "TT_BRIDGE_KAFKA_SSL_KEY_LOCATION", .flags = F_OPTIONAL,
     .help = "PEM file of the client certificate's private key (ssl.key.location)."},
    {.name = "kafka.ssl_key_password", .kind = KIND_STRING, .off = AT(pub.kafka_ssl_key_password),
     .def = "", .env = "TT_BRIDGE_KAFKA_SSL_KEY_PASSWORD", .flags = F_OPTIONAL | F_SECRET,
     .help = "Password of an encrypted private key (ssl.key.password)."},
    {.name = "kafka.ssl_key_password_file", .kind = KIND_STRING, .off = AT(ssl_key_password_file),
     .def = "", .env = "TT_BRIDGE_KAFKA_SSL_KEY_PASSWORD_FILE", .flags = F_OPTIONAL,
     .help = "File holding the private key's password; wins over ssl_key_password."},

    /* bridge */
    {.name = "bridge.towns", .kind = KIND_LIST, .off = AT(pub.towns), .off_count = AT(pub.ntowns),
     .def = "demo", .env = "TT_BRIDGE_TOWNS", .flags = F_TOKEN,
     .help = "Towns this bridge serves (at least one; names of 1-64 bytes of A-Z a-z 0-9 . _ -); "
             "commands for other towns are answered unknown_town."},
    {.name = "bridge.default_town", .kind = KIND_STRING, .off = AT(pub.default_town), .def = "",
     .env = "TT_BRIDGE_DEFAULT_TOWN", .flags = F_OPTIONAL | F_TOKEN,
     .help = "Town of commands that name none; must be one of towns. Unset: the only town when "
             "exactly one is configured, else commands must name their town."},
    {.name = "bridge.default_cli", .kind = KIND_STRING, .off = AT(pub.default_cli), .def = "claude",
     .env = "TT_BRIDGE_BRIDGE_DEFAULT_CLI", .flags = F_TOKEN,
     .help = "Agent CLI of a spawn that names none."},
    {.name = "bridge.max_record_bytes", .kind = KIND_SIZE, .off = AT(pub.max_record_bytes),
     .min = 256, .max = 16 * MIB, .def = "65536", .env = "TT_BRIDGE_BRIDGE_MAX_RECORD_BYTES",
     .help = "Larger command records are answered too_large (up to 16 MiB)."},
    {.name = "bridge.max_wait_ms", .kind = KIND_INT64, .off = AT(pub.max_wait_ms), .min = 0,
     .max = 7 * DAY_MS, .def = "3600000", .env = "TT_BRIDGE_BRIDGE_MAX_WAIT_MS",
     .help = "Cap and default of a wait command's timeout_ms (up to 7 days)."},
    {.name = "bridge.denied_ops", .kind = KIND_OPS, .off = AT(pub.op_denied), .def = "",
     .env = "TT_BRIDGE_DENIED_OPS",
     .help = "Operations turned off (answered forbidden), e.g. ( \"stop_all\", \"prune\" )."},
    {.name = "bridge.batch_size", .kind = KIND_SIZE, .off = AT(pub.batch_size), .min = 1,
     .max = 10000, .def = "500", .env = "TT_BRIDGE_BRIDGE_BATCH_SIZE",
     .help = "Most command records taken from Kafka and pipelined to Redis at once."},
    {.name = "bridge.batch_timeout_ms", .kind = KIND_INT, .off = AT(pub.batch_timeout_ms),
     .min = 0, .max = 1000, .def = "0", .env = "TT_BRIDGE_BRIDGE_BATCH_TIMEOUT_MS",
     .help = "How long to wait for more records after a batch's first, in milliseconds (0: "
             "take what has arrived; batches still grow with the load)."},
    {.name = "bridge.max_in_flight", .kind = KIND_SIZE, .off = AT(pub.max_in_flight), .min = 1,
     .max = 1000000, .def = "10000", .env = "TT_BRIDGE_BRIDGE_MAX_IN_FLIGHT",
     .help = "Commands awaiting their results (pending waits not included); at the cap the "
             "consumer pauses."},
    {.name = "bridge.max_pending_waits", .kind = KIND_SIZE, .off = AT(pub.max_pending_waits),
     .min = 1, .max = 10000000, .def = "100000", .env = "TT_BRIDGE_BRIDGE_MAX_PENDING_WAITS",
     .help = "Wait commands pending at once; they never hold back other commands, but at this "
             "cap the consumer pauses."},
    {.name = "bridge.wait_sweep_interval_ms", .kind = KIND_INT,
     .off = AT(pub.wait_sweep_interval_ms), .min = 100, .max = 3600000, .def = "10000",
     .env = "TT_BRIDGE_BRIDGE_WAIT_SWEEP_INTERVAL_MS",
     .help = "Period in which every pending wait is re-read once even if no notification said "
             "its agent changed, in milliseconds."},
    {.name = "bridge.directory_reconcile_ms", .kind = KIND_INT,
     .off = AT(pub.directory_reconcile_ms), .min = 0, .max = 86400000, .def = "300000",
     .env = "TT_BRIDGE_BRIDGE_DIRECTORY_RECONCILE_MS",
     .help = "Period after which a town's agent directory is read whole again, although "
             "keyspace notifications keep it current, in milliseconds (0: never)."},
    {.name = "bridge.idempotency_ttl_s", .kind = KIND_INT64, .off = AT(pub.idempotency_ttl_s),
     .min = 60, .max = 90 * DAY_S, .def = "604800", .env = "TT_BRIDGE_BRIDGE_IDEMPOTENCY_TTL_S",
     .help = "How long a command id is remembered, in seconds (up to 90 days)."},
    {.name = "bridge.scan_count", .kind = KIND_UINT, .off = AT(pub.scan_count), .min = 10,
     .max = 100000, .def = "1000", .env = "TT_BRIDGE_BRIDGE_SCAN_COUNT",
     .help = "COUNT hint of the SCANs that walk a town."},
    {.name = "bridge.wait_check_interval_ms", .kind = KIND_INT,
     .off = AT(pub.wait_check_interval_ms), .min = 10, .max = 60000, .def = "500",
     .env = "TT_BRIDGE_BRIDGE_WAIT_CHECK_INTERVAL_MS",
     .help = "How often waits past their deadline are answered, in milliseconds (waits whose "
             "agent changed are answered at once)."},
    {.name = "bridge.shutdown_timeout_ms", .kind = KIND_INT, .off = AT(pub.shutdown_timeout_ms),
     .min = 100, .max = 600000, .def = "10000", .env = "TT_BRIDGE_BRIDGE_SHUTDOWN_TIMEOUT_MS",
     .help = "Bound on a graceful stop (finish, flush, commit), in milliseconds."},
    {.name = "bridge.redis_backoff_max_ms", .kind = KIND_INT, .off = AT(pub.redis_backoff_max_ms),
     .min = 100, .max = 600000, .def = "5000", .env = "TT_BRIDGE_BRIDGE_REDIS_BACKOFF_MAX_MS",
     .help = "Cap of the exponential backoff between Redis reconnects, in milliseconds."},
    {.name = "bridge.allow_mismatched_peers", .kind = KIND_BOOL,
     .off = AT(pub.allow_mismatched_peers), .def = "false",
     .env = "TT_BRIDGE_BRIDGE_ALLOW_MISMATCHED_PEERS",
     .help = "Start even when another bridge of the group has other towns, default town, "
             "denied ops or limits (it then only logs an error)."},

    /* events */
    {.name = "events.relay", .kind = KIND_BOOL, .off = AT(pub.relay_enabled), .def = "true",
     .env = "TT_BRIDGE_EVENTS_RELAY",
     .help = "Relay each town's tt:{town}:events stream to events_topic."},
    {.name = "events.relay_lease_ms", .kind = KIND_INT, .off = AT(pub.relay_lease_ms), .min = 1000,
     .max = 600000, .def = "10000", .env = "TT_BRIDGE_EVENTS_RELAY_LEASE_MS",
     .help = "Lease that lets one bridge of many relay a town, in milliseconds."},
    {.name = "events.capture", .kind = KIND_BOOL, .off = AT(pub.capture_enabled), .def = "true",
     .env = "TT_BRIDGE_EVENTS_CAPTURE",
     .help = "Capture state changes made by others as agent_state_changed events."},
    {.name = "events.reconcile_interval_ms", .kind = KIND_INT,
     .off = AT(pub.reconcile_interval_ms), .min = 100, .max = 3600000, .def = "5000",
     .env = "TT_BRIDGE_EVENTS_RECONCILE_INTERVAL_MS",
     .help = "Period of the full comparison that catches changes notifications missed, in "
             "milliseconds."},
    {.name = "events.cloudevents", .kind = KIND_BOOL, .off = AT(pub.cloudevents), .def = "false",
     .env = "TT_BRIDGE_EVENTS_CLOUDEVENTS",
     .help = "Add CloudEvents ce_* headers to event records."},
    {.name = "events.cloudevents_source", .kind = KIND_STRING, .off = AT(pub.cloudevents_source),
     .def = "tinytown-bridge", .env = "TT_BRIDGE_EVENTS_CLOUDEVENTS_SOURCE",
     .help = "The ce_source header of event records."},

    /* http */
    {.name = "http.listen", .kind = KIND_STRING, .off = AT(pub.http_listen), .def = "",
     .env = "TT_BRIDGE_HTTP_LISTEN", .flags = F_OPTIONAL | F_LISTEN,
     .help = "host:port of /healthz, /readyz and /metrics, e.g. \"127.0.0.1:9464\" (host defaults "
             "to 127.0.0.1, port 0 picks a free one). Unset: no HTTP endpoint."},

    /* log */
    {.name = "log.level", .kind = KIND_LEVEL, .off = AT(pub.log_level), .def = "info",
     .env = "TT_BRIDGE_LOG_LEVEL", .help = "Lowest level logged: debug, info, warn or error."},
    {.name = "log.summary_interval_s", .kind = KIND_INT, .off = AT(pub.summary_interval_s),
     .min = 0, .max = 3600, .def = "30", .env = "TT_BRIDGE_LOG_SUMMARY_INTERVAL_S",
     .help = "Period of the info line summing up throughput, in seconds; 0 turns it off."},
};
/* clang-format on */

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

/* Environment variables that map onto librdkafka properties one by one. */
#define RDKAFKA_ENV_PREFIX "TT_BRIDGE_RDKAFKA_"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Typed access to a setting's storage. */
#define FIELD(p, off, type) ((type *)(void *)((char *)(p) + (off)))
#define CFIELD(p, off, type) ((const type *)(const void *)((const char *)(p) + (off)))

/* Names for pointer-typed fields, so that CFIELD's `const type *` puts the
 * const on the field itself. */
typedef char *str_t;
typedef char **strv_t;
typedef ttb_kv_t *kvv_t;

#define ORIGIN_MAX 320

typedef struct load_ctx {
    config_priv_t *p;
    char origin[NSETTINGS][ORIGIN_MAX]; /* where each value came from, for messages */
    bool set[NSETTINGS];                /* given by some layer, not defaulted */
    char *errstr;
    size_t errstr_size;
} load_ctx_t;

/* ---- small helpers ---- */

static void wipe_free(char *s) {
    if (s == NULL) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Writes "origin: message" into errstr; one line by construction since every
 * value quoted in a message goes through quote(). */
static int fail(load_ctx_t *ctx, int rc, const char *origin, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(load_ctx_t *ctx, int rc, const char *origin, const char *fmt, ...) {
    if (ctx->errstr == NULL || ctx->errstr_size == 0) return rc;
    int n = snprintf(ctx->errstr, ctx->errstr_size, "%s: ", origin);
    if (n < 0) n = 0;
    if ((size_t)n < ctx->errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errstr + n, ctx->errstr_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int fail_nomem(load_ctx_t *ctx, const char *origin) {
    return fail(ctx, TTB_ERR_NOMEM, origin, "out of memory");
}

/* A user's value inside a message: quoted, non-printables escaped (so the
 * message stays one line), long values cut. Never used on secrets. */
static const char *quote(char *buf, size_t size, const char *s) {
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; s[i] != '\0' && o + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 64) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static const setting_t *setting_find(const char *name, size_t len) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (strlen(settings[i].name) == len && memcmp(settings[i].name, name, len) == 0)
            return &settings[i];
    }
    return NULL;
}

static size_t setting_index(const setting_t *s) { return (size_t)(s - settings); }

static size_t section_len(const char *name) { return (size_t)(strchr(name, '.') - name); }

static bool is_section(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (section_len(settings[i].name) == n && memcmp(settings[i].name, name, n) == 0)
            return true;
    }
    return false;
}

/* "redis, kafka, ... or log", from the table so that it cannot go stale. */
static void section_list(char *buf, size_t size) {
    size_t o = 0, nsec = 0, last = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (i > 0 && section_len(settings[i].name) == section_len(settings[i - 1].name) &&
            strncmp(settings[i].name, settings[i - 1].name, section_len(settings[i].name)) == 0)
            continue;
        last = o;
        int n = snprintf(buf + o, size - o, "%s%.*s", nsec ? ", " : "",
                         (int)section_len(settings[i].name), settings[i].name);
        if (n < 0 || (size_t)n >= size - o) return;
        o += (size_t)n;
        nsec++;
    }
    /* The last ", x" becomes " or x". */
    if (nsec > 1 && o + 2 < size) {
        memmove(buf + last + 4, buf + last + 2, o - last - 1);
        memcpy(buf + last, " or ", 4);
    }
}

static bool is_int_kind(setting_kind_t kind) {
    return kind == KIND_INT || kind == KIND_INT64 || kind == KIND_SIZE || kind == KIND_UINT;
}

static bool is_list_kind(setting_kind_t kind) {
    return kind == KIND_LIST || kind == KIND_OPS || kind == KIND_KV;
}

/* librdkafka property names whose values are credentials. */
static bool kv_key_is_secret(const char *key) {
    static const char *const marks[] = {"password", "secret", "key.pem", "oauthbearer.config"};
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
        if (strcasestr(key, marks[i]) != NULL) return true;
    }
    return false;
}

/* ---- value checks ---- */

/* ASCII only, whatever the locale: these names cross into other programs. */
static bool is_name_char(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.' ||
           c == '_' || c == '-';
}

/* Towns and CLIs end up inside Redis keys and tinytown's terminals. */
static bool token_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > TTB_CMD_TOWN_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_name_char((unsigned char)s[i])) return false;
    }
    return true;
}

/* Kafka's own rule: 1-249 of [A-Za-z0-9._-], not "." or "..". */
static bool topic_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_name_char((unsigned char)s[i])) return false;
    }
    return true;
}

/* Parses unsigned decimal digits in [s, s+n) up to @p max. */
static bool digits_ok(const char *s, size_t n, long max, long *out) {
    if (n == 0) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
        if (v > max) return false;
    }
    *out = v;
    return true;
}

static bool host_char_ok(unsigned char c) { return is_name_char(c); }

static bool choice_ok(const char *const *choices, const char *v) {
    for (; *choices != NULL; choices++) {
        if (strcasecmp(*choices, v) == 0) return true;
    }
    return false;
}

/* "a, b or c" */
static void choice_list(const char *const *choices, char *buf, size_t size) {
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; choices[i] != NULL && o < size; i++) {
        const char *sep = i == 0 ? "" : choices[i + 1] == NULL ? " or " : ", ";
        int n = snprintf(buf + o, size - o, "%s%s", sep, choices[i]);
        if (n < 0) return;
        o += (size_t)n;
    }
}

/* [host]:port or [v6]:port; the HTTP module defaults an empty host. */
static bool listen_ok(const char *s, char *msg, size_t msgsz) {
    const char *colon = strrchr(s, ':');
    if (colon == NULL) {
        snprintf(msg, msgsz, "expected host:port");
        return false;
    }
    size_t hlen = (size_t)(colon - s);
    if (hlen > 0 && s[0] == '[') {
        if (hlen < 3 || s[hlen - 1] != ']') {
            snprintf(msg, msgsz, "expected host:port ([v6]:port for IPv6)");
            return false;
        }
        for (size_t i = 1; i + 1 < hlen; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!isxdigit(c) && c != ':' && c != '.') {
                snprintf(msg, msgsz, "bad IPv6 address");
                return false;
            }
        }
    } else {
        for (size_t i = 0; i < hlen; i++) {
            if (!host_char_ok((unsigned char)s[i])) {
                snprintf(msg, msgsz, "bad host (expected host:port)");
                return false;
            }
        }
    }
    long port;
    if (!digits_ok(colon + 1, strlen(colon + 1), 65535, &port)) {
        snprintf(msg, msgsz, "bad port (expected 0..65535)");
        return false;
    }
    return true;
}

/* ---- Redis URLs ---- */

typedef struct redis_url {
    bool tls; /* rediss:// */
    char *host;
    char *username;
    char *password;
    int port;
    int db;
} redis_url_t;

static void redis_url_clear(redis_url_t *u) {
    free(u->host);
    wipe_free(u->username);
    wipe_free(u->password);
    memset(u, 0, sizeof(*u));
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+n): passwords with '@', ':' or '/' must be encoded
 * to fit in a URL. @returns 0, TTB_ERR_INVALID or TTB_ERR_NOMEM. */
static int pct_decode(const char *s, size_t n, char **out) {
    char *d = malloc(n + 1);
    if (d == NULL) return TTB_ERR_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                explicit_bzero(d, n + 1);
                free(d);
                return TTB_ERR_INVALID;
            }
            d[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[o++] = s[i];
        }
    }
    d[o] = '\0';
    *out = d;
    return 0;
}

/* redis[s]://[user[:password]@]host[:port][/db]. Messages never quote the
 * URL: it may hold a password. */
static int redis_url_parse(const char *url, redis_url_t *u, char *msg, size_t msgsz) {
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    const char *sep = strstr(url, "://");
    if (sep == NULL) {
        snprintf(msg, msgsz, "expected redis://[user[:password]@]host[:port][/db]");
        return TTB_ERR_INVALID;
    }
    size_t slen = (size_t)(sep - url);
    u->tls = slen == 6 && strncasecmp(url, "rediss", 6) == 0;
    if (!u->tls && (slen != 5 || strncasecmp(url, "redis", 5) != 0)) {
        char q[96], scheme[40];
        snprintf(scheme, sizeof(scheme), "%.*s", (int)(slen < 32 ? slen : 32), url);
        snprintf(msg, msgsz, "unsupported scheme %s (expected redis:// or rediss://)",
                 quote(q, sizeof(q), scheme));
        return TTB_ERR_INVALID;
    }
    const char *rest = sep + 3;
    if (strpbrk(rest, "?#") != NULL) {
        snprintf(msg, msgsz, "query parameters and fragments are not supported");
        return TTB_ERR_INVALID;
    }
    size_t alen = strcspn(rest, "/");
    const char *path = rest + alen;

    /* The last '@' of the authority ends the user info, as URL parsers do,
     * so that an unencoded '@' in a password still parses. */
    const char *hp = rest;
    const char *at = NULL;
    for (const char *c = rest; c < rest + alen; c++) {
        if (*c == '@') at = c;
    }
    int rc;
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        size_t ulen = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
        if (ulen > 0 && (rc = pct_decode(rest, ulen, &u->username)) != 0) goto bad_userinfo;
        if (colon != NULL && at - colon > 1 &&
            (rc = pct_decode(colon + 1, (size_t)(at - colon - 1), &u->password)) != 0)
            goto bad_userinfo;
        hp = at + 1;
    }
    size_t hplen = (size_t)(rest + alen - hp);
    const char *host = hp, *port = NULL;
    size_t hlen;
    if (hplen > 0 && hp[0] == '[') {
        const char *close = memchr(hp, ']', hplen);
        if (close == NULL || close == hp + 1) {
            snprintf(msg, msgsz, "bad IPv6 host (expected [address])");
            goto fail;
        }
        host = hp + 1;
        hlen = (size_t)(close - host);
        for (size_t i = 0; i < hlen; i++) {
            unsigned char c = (unsigned char)host[i];
            if (!isxdigit(c) && c != ':' && c != '.') {
                snprintf(msg, msgsz, "bad IPv6 host");
                goto fail;
            }
        }
        if (close + 1 < hp + hplen) {
            if (close[1] != ':') {
                snprintf(msg, msgsz, "bad host");
                goto fail;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', hplen);
        hlen = colon ? (size_t)(colon - hp) : hplen;
        if (colon != NULL) port = colon + 1;
        for (size_t i = 0; i < hlen; i++) {
            if (!host_char_ok((unsigned char)hp[i])) {
                snprintf(msg, msgsz, "bad host");
                goto fail;
            }
        }
    }
    if (hlen == 0) {
        snprintf(msg, msgsz, "missing host");
        goto fail;
    }
    if (port != NULL) {
        long v;
        if (!digits_ok(port, (size_t)(rest + alen - port), 65535, &v) || v == 0) {
            snprintf(msg, msgsz, "bad port (expected 1..65535)");
            goto fail;
        }
        u->port = (int)v;
    }
    if (path[0] == '/' && path[1] != '\0') {
        long v;
        if (!digits_ok(path + 1, strlen(path + 1), INT_MAX, &v)) {
            snprintf(msg, msgsz, "bad db (expected /0, /1, ...)");
            goto fail;
        }
        u->db = (int)v;
    }
    u->host = strndup(host, hlen);
    if (u->host == NULL) {
        redis_url_clear(u);
        snprintf(msg, msgsz, "out of memory");
        return TTB_ERR_NOMEM;
    }
    return 0;

bad_userinfo:
    if (rc == TTB_ERR_NOMEM) {
        redis_url_clear(u);
        snprintf(msg, msgsz, "out of memory");
        return TTB_ERR_NOMEM;
    }
    snprintf(msg, msgsz, "bad percent-encoding in the user info");
fail:
    redis_url_clear(u);
    return TTB_ERR_INVALID;
}

char *ttb_redis_url_redact(const char *url) {
    if (url == NULL) return NULL;
    const char *sep = strstr(url, "://");
    const char *rest = sep ? sep + 3 : url;
    size_t alen = strcspn(rest, "/?#");
    const char *at = NULL;
    for (const char *c = rest; c < rest + alen; c++) {
        if (*c == '@') at = c;
    }
    const char *colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
    if (colon == NULL) return strdup(url); /* no password: nothing to hide */
    size_t head = (size_t)(colon + 1 - url);
    size_t tail = strlen(at);
    char *out = malloc(head + 4 + tail + 1);
    if (out == NULL) return NULL;
    memcpy(out, url, head);
    memcpy(out + head, "****", 4);
    memcpy(out + head + 4, at, tail + 1);
    return out;
}

/* ---- key=value lists ---- */

/* Sets @p key in a kv list, replacing an earlier value: later layers win
 * key by key, and librdkafka sees each key once. */
static int kv_put(ttb_kv_t **list, size_t *n, const char *key, size_t klen, const char *value) {
    for (size_t i = 0; i < *n; i++) {
        if (strlen((*list)[i].key) == klen && memcmp((*list)[i].key, key, klen) == 0) {
            char *v = strdup(value);
            if (v == NULL) return TTB_ERR_NOMEM;
            wipe_free((*list)[i].value);
            (*list)[i].value = v;
            return 0;
        }
    }
    ttb_kv_t *grown = realloc(*list, (*n + 1) * sizeof(**list));
    if (grown == NULL) return TTB_ERR_NOMEM;
    *list = grown;
    char *k = strndup(key, klen);
    char *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return TTB_ERR_NOMEM;
    }
    grown[*n].key = k;
    grown[*n].value = v;
    (*n)++;
    return 0;
}

static void kv_free(ttb_kv_t *list, size_t n) {
    for (size_t i = 0; i < n; i++) {
        wipe_free(list[i].key);
        wipe_free(list[i].value);
    }
    free(list);
}

/* A property name: printable, no spaces. */
static bool kv_key_ok(const char *key, size_t klen) {
    if (klen == 0) return false;
    for (size_t i = 0; i < klen; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= 0x20 || c >= 0x7f) return false;
    }
    return true;
}

/* ---- applying values ---- */

static void note_origin(load_ctx_t *ctx, size_t i, const char *origin, bool layer) {
    snprintf(ctx->origin[i], sizeof(ctx->origin[i]), "%s", origin);
    if (layer) ctx->set[i] = true;
}

static int apply_int(load_ctx_t *ctx, const setting_t *s, int64_t v, const char *origin) {
    if (v < s->min || v > s->max)
        return fail(ctx, TTB_ERR_INVALID, origin,
                    "%" PRId64 " is out of range %" PRId64 "..%" PRId64, v, s->min, s->max);
    switch (s->kind) {
    case KIND_INT: *FIELD(ctx->p, s->off, int) = (int)v; break;
    case KIND_INT64: *FIELD(ctx->p, s->off, int64_t) = v; break;
    case KIND_SIZE: *FIELD(ctx->p, s->off, size_t) = (size_t)v; break;
    case KIND_UINT: *FIELD(ctx->p, s->off, unsigned) = (unsigned)v; break;
    default: break;
    }
    return 0;
}

static int apply_bool(load_ctx_t *ctx, const setting_t *s, bool v) {
    *FIELD(ctx->p, s->off, bool) = v;
    return 0;
}

/* Strings and levels, whatever layer they come from. */
static int apply_string(load_ctx_t *ctx, const setting_t *s, const char *v, const char *origin) {
    char q[160], msg[160];
    if (s->kind == KIND_LEVEL) {
        ttb_log_level_t level;
        if (ttb_log_level_parse(v, &level) != 0)
            return fail(ctx, TTB_ERR_INVALID, origin,
                        "unknown level %s (expected debug, info, warn or error)",
                        quote(q, sizeof(q), v));
        *FIELD(ctx->p, s->off, int) = (int)level;
        return 0;
    }
    char **field = FIELD(ctx->p, s->off, char *);
    if (v[0] == '\0') {
        if (!(s->flags & F_OPTIONAL))
            return fail(ctx, TTB_ERR_INVALID, origin, "must not be empty");
        wipe_free(*field);
        *field = NULL;
        return 0;
    }
    if ((s->flags & F_TOKEN) && !token_ok(v))
        return fail(ctx, TTB_ERR_INVALID, origin, "%s must be 1-64 bytes of A-Z a-z 0-9 . _ -",
                    quote(q, sizeof(q), v));
    if ((s->flags & F_TOPIC) && !topic_ok(v))
        return fail(ctx, TTB_ERR_INVALID, origin,
                    "%s is not a Kafka topic name (1-249 bytes of A-Z a-z 0-9 . _ -)",
                    quote(q, sizeof(q), v));
    if (s->choices != NULL && !choice_ok(s->choices, v)) {
        char list[160];
        choice_list(s->choices, list, sizeof(list));
        return fail(ctx, TTB_ERR_INVALID, origin, "%s is not one of %s", quote(q, sizeof(q), v),
                    list);
    }
    if ((s->flags & F_LISTEN) && !listen_ok(v, msg, sizeof(msg)))
        return fail(ctx, TTB_ERR_INVALID, origin, "%s: %s", quote(q, sizeof(q), v), msg);
    if (s->flags & F_REDIS_URL) {
        /* Checked now, while the origin is known; filled in at the end. */
        redis_url_t u;
        int rc = redis_url_parse(v, &u, msg, sizeof(msg));
        if (rc != 0) return fail(ctx, rc, origin, "%s", msg);
        redis_url_clear(&u);
    }
    char *copy = strdup(v);
    if (copy == NULL) return fail_nomem(ctx, origin);
    wipe_free(*field);
    *field = copy;
    return 0;
}

/* Lists from any layer, as an array of strings. String lists and op lists
 * are replaced as a whole (a later layer says what the list is); property
 * lists are merged key by key. */
static int apply_list(load_ctx_t *ctx, const setting_t *s, const char *const *items, size_t n,
                      const char *origin) {
    char q[160];
    if (s->kind == KIND_OPS) {
        bool denied[TTB_OP__COUNT] = {false};
        for (size_t i = 0; i < n; i++) {
            ttb_op_t op;
            if (ttb_op_parse(items[i], &op) != 0)
                return fail(ctx, TTB_ERR_INVALID, origin, "unknown op %s",
                            quote(q, sizeof(q), items[i]));
            denied[op] = true;
        }
        memcpy(FIELD(ctx->p, s->off, bool), denied, sizeof(denied));
        return 0;
    }
    if (s->kind == KIND_KV) {
        ttb_kv_t **list = FIELD(ctx->p, s->off, ttb_kv_t *);
        size_t *count = FIELD(ctx->p, s->off_count, size_t);
        for (size_t i = 0; i < n; i++) {
            /* The value is not quoted back: it may be a credential. */
            const char *eq = strchr(items[i], '=');
            if (eq == NULL || !kv_key_ok(items[i], (size_t)(eq - items[i])))
                return fail(ctx, TTB_ERR_INVALID, origin, "item %zu: expected \"name=value\"",
                            i + 1);
            if (kv_put(list, count, items[i], (size_t)(eq - items[i]), eq + 1) != 0)
                return fail_nomem(ctx, origin);
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if ((s->flags & F_TOKEN) && !token_ok(items[i]))
            return fail(ctx, TTB_ERR_INVALID, origin, "%s must be 1-64 bytes of A-Z a-z 0-9 . _ -",
                        quote(q, sizeof(q), items[i]));
    }
    char **copy = calloc(n + 1, sizeof(*copy));
    if (copy == NULL) return fail_nomem(ctx, origin);
    for (size_t i = 0; i < n; i++) {
        if ((copy[i] = strdup(items[i])) == NULL) {
            for (size_t j = 0; j < i; j++) free(copy[j]);
            free(copy);
            return fail_nomem(ctx, origin);
        }
    }
    char ***field = FIELD(ctx->p, s->off, char **);
    size_t *count = FIELD(ctx->p, s->off_count, size_t);
    for (size_t i = 0; i < *count; i++) free((*field)[i]);
    free(*field);
    *field = copy;
    *count = n;
    return 0;
}

static int parse_bool(const char *v, bool *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return TTB_ERR_INVALID;
}

/* Splits "a, b,c" into trimmed, non-empty items. The copy is wiped after
 * use since property lists may hold credentials. */
static int split_list(const char *text, char **buf, const char ***items, size_t *n) {
    *buf = strdup(text);
    size_t cap = 1;
    for (const char *c = text; *c; c++) cap += *c == ',';
    *items = calloc(cap, sizeof(**items));
    *n = 0;
    if (*buf == NULL || *items == NULL) return TTB_ERR_NOMEM;
    char *save = NULL;
    for (char *tok = strtok_r(*buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t') tok++;
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t')) tok[--len] = '\0';
        if (len > 0) (*items)[(*n)++] = tok;
    }
    return 0;
}

/* A value given as text (environment, --set, defaults), parsed by the
 * setting's type. */
static int apply_text(load_ctx_t *ctx, const setting_t *s, const char *text, const char *origin) {
    char q[160];
    if (is_int_kind(s->kind)) {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (text[0] == '\0' || isspace((unsigned char)text[0]) || *end != '\0')
            return fail(ctx, TTB_ERR_INVALID, origin, "not an integer: %s",
                        quote(q, sizeof(q), text));
        if (errno == ERANGE)
            return fail(ctx, TTB_ERR_INVALID, origin, "%s is out of range %" PRId64 "..%" PRId64,
                        text, s->min, s->max);
        return apply_int(ctx, s, (int64_t)v, origin);
    }
    if (s->kind == KIND_BOOL) {
        bool v;
        if (parse_bool(text, &v) != 0)
            return fail(ctx, TTB_ERR_INVALID, origin,
                        "not a boolean: %s (expected true/false, yes/no, on/off or 1/0)",
                        quote(q, sizeof(q), text));
        return apply_bool(ctx, s, v);
    }
    if (is_list_kind(s->kind)) {
        char *buf;
        const char **items;
        size_t n;
        int rc = split_list(text, &buf, &items, &n);
        if (rc == 0)
            rc = apply_list(ctx, s, items, n, origin);
        else
            rc = fail_nomem(ctx, origin);
        wipe_free(buf);
        free(items);
        return rc;
    }
    return apply_string(ctx, s, text, origin);
}

/* ---- layers ---- */

static int layer_defaults(load_ctx_t *ctx) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        note_origin(ctx, i, settings[i].name, false);
        int rc = apply_text(ctx, &settings[i], settings[i].def, settings[i].name);
        if (rc != 0) return rc;
    }
    return 0;
}

static const char *libconfig_type_name(int type) {
    switch (type) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "nothing";
    }
}

/* One setting of the file, already matched to its row. */
static int file_setting(load_ctx_t *ctx, const setting_t *s, const config_setting_t *cs,
                        const char *origin) {
    int type = config_setting_type(cs);
    if (is_int_kind(s->kind)) {
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
            return fail(ctx, TTB_ERR_INVALID, origin, "expected an integer, not %s",
                        libconfig_type_name(type));
        return apply_int(ctx, s, (int64_t)config_setting_get_int64(cs), origin);
    }
    if (s->kind == KIND_BOOL) {
        if (type != CONFIG_TYPE_BOOL)
            return fail(ctx, TTB_ERR_INVALID, origin, "expected a boolean (true or false), not %s",
                        libconfig_type_name(type));
        return apply_bool(ctx, s, config_setting_get_bool(cs) != 0);
    }
    if (is_list_kind(s->kind)) {
        if (type != CONFIG_TYPE_LIST && type != CONFIG_TYPE_ARRAY)
            return fail(ctx, TTB_ERR_INVALID, origin,
                        "expected a list of strings ( \"a\", \"b\" ), not %s",
                        libconfig_type_name(type));
        int n = config_setting_length(cs);
        const char **items = calloc((size_t)n + 1, sizeof(*items));
        if (items == NULL) return fail_nomem(ctx, origin);
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(cs, (unsigned)i);
            if (e == NULL || config_setting_type(e) != CONFIG_TYPE_STRING) {
                free(items);
                return fail(ctx, TTB_ERR_INVALID, origin, "item %d: expected a string, not %s",
                            i + 1,
                            libconfig_type_name(e ? config_setting_type(e) : CONFIG_TYPE_NONE));
            }
            items[i] = config_setting_get_string(e);
        }
        int rc = apply_list(ctx, s, items, (size_t)n, origin);
        free(items);
        return rc;
    }
    if (type != CONFIG_TYPE_STRING)
        return fail(ctx, TTB_ERR_INVALID, origin, "expected a string, not %s",
                    libconfig_type_name(type));
    return apply_string(ctx, s, config_setting_get_string(cs), origin);
}

static const char *setting_file(const config_setting_t *cs, const char *path) {
    const char *f = config_setting_source_file(cs);
    return f ? f : path;
}

/* Walks the whole parsed tree so that anything not in the table (a typo, a
 * setting in the wrong section) is an error rather than silently ignored. */
static int file_walk(load_ctx_t *ctx, const config_t *lc, const char *path) {
    char origin[ORIGIN_MAX];
    const config_setting_t *root = config_root_setting(lc);
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *sec = config_setting_get_elem(root, (unsigned)i);
        const char *sname = config_setting_name(sec);
        snprintf(origin, sizeof(origin), "%s:%u: %s", setting_file(sec, path),
                 config_setting_source_line(sec), sname);
        if (!is_section(sname)) {
            char list[128];
            section_list(list, sizeof(list));
            return fail(ctx, TTB_ERR_INVALID, origin, "unknown section (expected %s)", list);
        }
        if (config_setting_type(sec) != CONFIG_TYPE_GROUP)
            return fail(ctx, TTB_ERR_INVALID, origin, "expected a group (%s = { ... };), not %s",
                        sname, libconfig_type_name(config_setting_type(sec)));
        for (int j = 0; j < config_setting_length(sec); j++) {
            const config_setting_t *cs = config_setting_get_elem(sec, (unsigned)j);
            char full[128];
            snprintf(full, sizeof(full), "%s.%s", sname, config_setting_name(cs));
            snprintf(origin, sizeof(origin), "%s:%u: %s", setting_file(cs, path),
                     config_setting_source_line(cs), full);
            const setting_t *s = setting_find(full, strlen(full));
            if (s == NULL) return fail(ctx, TTB_ERR_INVALID, origin, "unknown setting");
            int rc = file_setting(ctx, s, cs, origin);
            if (rc != 0) return rc;
            note_origin(ctx, setting_index(s), origin, true);
        }
    }
    return 0;
}

static int layer_file(load_ctx_t *ctx, const char *path) {
    /* libconfig only says "file I/O error"; the errno is worth a line. */
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return fail(ctx, TTB_ERR_INVALID, path, "cannot open: %s", strerror(errno));
    fclose(fp);

    config_t lc;
    config_init(&lc);
    /* @include "x.conf" is relative to the including file, not to the cwd. */
    char *dir = strdup(path);
    if (dir == NULL) {
        config_destroy(&lc);
        return fail_nomem(ctx, path);
    }
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        slash[slash == dir ? 1 : 0] = '\0';
        config_set_include_dir(&lc, dir);
    }
    int rc = 0;
    if (config_read_file(&lc, path) != CONFIG_TRUE) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
            rc = fail(ctx, TTB_ERR_INVALID, path, "cannot read: %s", config_error_text(&lc));
        } else {
            char where[ORIGIN_MAX];
            const char *efile = config_error_file(&lc);
            snprintf(where, sizeof(where), "%s:%d", efile ? efile : path, config_error_line(&lc));
            rc = fail(ctx, TTB_ERR_INVALID, where, "%s", config_error_text(&lc));
        }
    } else {
        rc = file_walk(ctx, &lc, path);
    }
    config_destroy(&lc);
    free(dir);
    return rc;
}

static const char *env_get(char *const *env, const char *name) {
    size_t n = strlen(name);
    for (; *env != NULL; env++) {
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=') return *env + n + 1;
    }
    return NULL;
}

static bool env_is_known(const char *entry) {
    size_t n = strcspn(entry, "=");
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (strlen(settings[i].env) == n && strncmp(settings[i].env, entry, n) == 0) return true;
    }
    return false;
}

/* Empty variables count as unset: compose files and Kubernetes manifests
 * pass "FOO=" for a variable nobody filled in. */
static int layer_env(load_ctx_t *ctx, char *const *env) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *v = env_get(env, settings[i].env);
        if (v == NULL || v[0] == '\0') continue;
        int rc = apply_text(ctx, &settings[i], v, settings[i].env);
        if (rc != 0) return rc;
        note_origin(ctx, i, settings[i].env, true);
    }
    /* TT_BRIDGE_RDKAFKA_SASL_PASSWORD=x → sasl.password=x: one variable per
     * property lets secrets come from their own variables. */
    const setting_t *props = setting_find("kafka.properties", strlen("kafka.properties"));
    const size_t plen = strlen(RDKAFKA_ENV_PREFIX);
    for (char *const *e = env; *e != NULL; e++) {
        if (strncmp(*e, "TT_BRIDGE_", 10) != 0) continue;
        if (strncmp(*e, RDKAFKA_ENV_PREFIX, plen) != 0) {
            if (!env_is_known(*e)) {
                /* Not an error: other tools may share the prefix. Only the
                 * name is logged; the value may be a secret. */
                char name[128];
                snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
                ttb_log_warn("unknown configuration variable ignored", "name", name);
            }
            continue;
        }
        const char *eq = strchr(*e, '=');
        if (eq == NULL || eq[1] == '\0') continue;
        char origin[ORIGIN_MAX];
        snprintf(origin, sizeof(origin), "%.*s", (int)(eq - *e), *e);
        size_t klen = (size_t)(eq - *e) - plen;
        if (klen == 0) return fail(ctx, TTB_ERR_INVALID, origin, "missing the property name");
        char key[256];
        if (klen >= sizeof(key))
            return fail(ctx, TTB_ERR_INVALID, origin, "property name too long");
        for (size_t k = 0; k < klen; k++) {
            char c = (*e)[plen + k];
            key[k] = c == '_' ? '.' : (char)tolower((unsigned char)c);
        }
        key[klen] = '\0';
        if (!kv_key_ok(key, klen)) return fail(ctx, TTB_ERR_INVALID, origin, "bad property name");
        if (kv_put(&ctx->p->pub.kafka_props, &ctx->p->pub.nkafka_props, key, klen, eq + 1) != 0)
            return fail_nomem(ctx, origin);
        note_origin(ctx, setting_index(props), origin, true);
    }
    return 0;
}

/* Names a flag's item by its leading [A-Za-z0-9._-]: enough to say which
 * item is wrong, and never its value, which may be a secret typed without
 * its '=' ("-X sasl.password:hunter2"). */
static void flag_origin(char *buf, size_t size, const char *flag, const char *item) {
    size_t n = 0;
    while (n < 100 && is_name_char((unsigned char)item[n])) n++;
    if (n > 0) snprintf(buf, size, "%s %.*s", flag, (int)n, item);
    else snprintf(buf, size, "%s", flag);
}

static int layer_sets(load_ctx_t *ctx, const char *const *sets, size_t nsets) {
    char origin[ORIGIN_MAX];
    for (size_t i = 0; i < nsets; i++) {
        flag_origin(origin, sizeof(origin), "--set", sets[i]);
        const char *eq = strchr(sets[i], '=');
        if (eq == NULL) return fail(ctx, TTB_ERR_INVALID, origin, "expected section.name=value");
        const setting_t *s = setting_find(sets[i], (size_t)(eq - sets[i]));
        if (s == NULL) return fail(ctx, TTB_ERR_INVALID, origin, "unknown setting");
        int rc = apply_text(ctx, s, eq + 1, origin);
        if (rc != 0) return rc;
        note_origin(ctx, setting_index(s), origin, true);
    }
    return 0;
}

static int layer_kafka_sets(load_ctx_t *ctx, const char *const *sets, size_t nsets) {
    const setting_t *props = setting_find("kafka.properties", strlen("kafka.properties"));
    char origin[ORIGIN_MAX];
    for (size_t i = 0; i < nsets; i++) {
        flag_origin(origin, sizeof(origin), "-X", sets[i]);
        const char *eq = strchr(sets[i], '=');
        size_t klen = eq ? (size_t)(eq - sets[i]) : 0;
        if (eq == NULL || !kv_key_ok(sets[i], klen))
            return fail(ctx, TTB_ERR_INVALID, origin, "expected property=value");
        if (kv_put(&ctx->p->pub.kafka_props, &ctx->p->pub.nkafka_props, sets[i], klen, eq + 1) !=
            0)
            return fail_nomem(ctx, origin);
        note_origin(ctx, setting_index(props), origin, true);
    }
    return 0;
}

/* ---- the end: what involves several settings ---- */

static size_t idx(const char *name) { return setting_index(setting_find(name, strlen(name))); }

/* Reads a password file: one trailing newline is stripped (editors and
 * `echo` add it; Docker secrets keep it). */
static int read_password_file(load_ctx_t *ctx, const char *path, const char *origin, char **out) {
    char q[160];
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return fail(ctx, TTB_ERR_INVALID, origin, "cannot read %s: %s", quote(q, sizeof(q), path),
                    strerror(errno));
    enum { MAX = 4096 };
    char *buf = calloc(1, MAX + 1);
    if (buf == NULL) {
        fclose(fp);
        return fail_nomem(ctx, origin);
    }
    size_t n = fread(buf, 1, MAX + 1, fp);
    int rerr = ferror(fp) ? errno : 0;
    fclose(fp);
    int rc = 0;
    if (rerr != 0) {
        rc = fail(ctx, TTB_ERR_INVALID, origin, "cannot read %s: %s", quote(q, sizeof(q), path),
                  strerror(rerr));
    } else if (n > MAX) {
        rc = fail(ctx, TTB_ERR_INVALID, origin, "%s is larger than %d bytes",
                  quote(q, sizeof(q), path), MAX);
    } else {
        if (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '\r') buf[--n] = '\0';
        if (n == 0)
            rc = fail(ctx, TTB_ERR_INVALID, origin, "%s is empty", quote(q, sizeof(q), path));
        else if (memchr(buf, '\0', n) != NULL)
            rc = fail(ctx, TTB_ERR_INVALID, origin, "%s holds a NUL byte",
                      quote(q, sizeof(q), path));
    }
    if (rc != 0) {
        explicit_bzero(buf, MAX + 1);
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* The redis.tls_* settings: meaningful with rediss:// only, where a value
 * that would be ignored is a mistake worth stopping for (the operator meant
 * TLS and would get plain TCP). Defaults are fine either way, so that
 * --check-config's output loads again. */
static int finish_redis_tls(load_ctx_t *ctx, bool tls) {
    config_priv_t *p = ctx->p;
    const char *const values[] = {p->tls_ca_file, p->tls_ca_dir, p->tls_cert_file,
                                  p->tls_key_file, p->tls_server_name,
                                  p->tls_verify ? NULL : "false"};
    static const char *const names[] = {"redis.tls_ca_file", "redis.tls_ca_dir",
                                        "redis.tls_cert_file", "redis.tls_key_file",
                                        "redis.tls_server_name", "redis.tls_verify"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !tls; i++) {
        if (values[i] != NULL)
            return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx(names[i])],
                        "a TLS setting needs a rediss:// redis.url (it is redis://)");
    }
    if (p->tls_key_file != NULL && p->tls_cert_file == NULL)
        return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx("redis.tls_key_file")],
                    "needs redis.tls_cert_file");
    ttb_redis_opts_t *r = &p->pub.redis;
    r->tls = tls;
    r->tls_ca_file = p->tls_ca_file;
    r->tls_ca_dir = p->tls_ca_dir;
    r->tls_cert_file = p->tls_cert_file;
    r->tls_key_file = p->tls_key_file;
    r->tls_server_name = p->tls_server_name;
    r->tls_insecure = !p->tls_verify;
    if (tls && !p->tls_verify)
        ttb_log_warn("redis.tls_verify=false: the Redis server's certificate is not checked; "
                     "traffic is encrypted but anyone in the path can pose as the server");
    return 0;
}

static int finish_redis(load_ctx_t *ctx) {
    config_priv_t *p = ctx->p;
    const char *url_origin = ctx->origin[idx("redis.url")];
    char msg[160];
    redis_url_t u;
    int rc = redis_url_parse(p->pub.redis_url, &u, msg, sizeof(msg));
    if (rc != 0) return fail(ctx, rc, url_origin, "%s", msg);

    /* password_file > password > the URL's password. */
    char *password = NULL;
    if (p->password_file != NULL) {
        rc = read_password_file(ctx, p->password_file, ctx->origin[idx("redis.password_file")],
                                &password);
        if (rc != 0) {
            redis_url_clear(&u);
            return rc;
        }
    } else if (p->password_setting != NULL) {
        if ((password = strdup(p->password_setting)) == NULL) {
            redis_url_clear(&u);
            return fail_nomem(ctx, "redis.password");
        }
    } else {
        password = u.password;
        u.password = NULL;
    }
    if (p->username_setting != NULL) { /* redis.username > the URL's user */
        wipe_free(u.username);
        if ((u.username = strdup(p->username_setting)) == NULL) {
            wipe_free(password);
            redis_url_clear(&u);
            return fail_nomem(ctx, "redis.username");
        }
    }
    p->redis_host = u.host;
    p->redis_username = u.username;
    p->redis_password = password;
    p->pub.redis.host = p->redis_host;
    p->pub.redis.port = u.port;
    p->pub.redis.username = p->redis_username;
    p->pub.redis.password = p->redis_password;
    p->pub.redis.db = u.db;
    u.host = u.username = NULL;
    bool tls = u.tls;
    redis_url_clear(&u);
    if ((rc = finish_redis_tls(ctx, tls)) != 0) return rc;
    if ((p->pub.redis_url_redacted = ttb_redis_url_redact(p->pub.redis_url)) == NULL)
        return fail_nomem(ctx, url_origin);
    return 0;
}

/* A secret's *_file setting, when set, replaces the secret with the file's
 * content, whichever layer gave either. */
static int secret_from_file(load_ctx_t *ctx, const char *file_setting, const char *path,
                            char **secret) {
    if (path == NULL) return 0;
    char *value;
    int rc = read_password_file(ctx, path, ctx->origin[idx(file_setting)], &value);
    if (rc != 0) return rc;
    wipe_free(*secret);
    *secret = value;
    return 0;
}

const char *ttb_config_kafka_effective(const ttb_config_t *c, const char *prop,
                                       const char *setting) {
    for (size_t i = 0; i < c->nkafka_props; i++) {
        if (strcmp(c->kafka_props[i].key, prop) == 0) return c->kafka_props[i].value;
    }
    return setting;
}

/* Half of a pair (user name and password, certificate and key) is a mistake
 * librdkafka reports only at the first connection, if at all. */
static int kafka_pair(load_ctx_t *ctx, const char *a, const char *va, const char *b,
                      const char *vb) {
    if ((va == NULL) == (vb == NULL)) return 0;
    const char *have = va != NULL ? a : b;
    return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx(have)], "needs %s too", va ? b : a);
}

/* SASL settings on a connection without SASL would be ignored silently. */
static int kafka_needs_protocol(load_ctx_t *ctx, const char *setting, const char *protocol,
                                const char *const *wanted) {
    char q[160];
    if (protocol != NULL) {
        for (const char *const *w = wanted; *w != NULL; w++) {
            if (strcasecmp(*w, protocol) == 0) return 0;
        }
    }
    return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx(setting)],
                "needs kafka.security_protocol %s or %s (it is %s)", wanted[0], wanted[1],
                protocol ? quote(q, sizeof(q), protocol) : "unset: plaintext");
}

static int finish_kafka(load_ctx_t *ctx) {
    config_priv_t *p = ctx->p;
    ttb_config_t *c = &p->pub;
    static const char *const sasl[] = {"sasl_ssl", "sasl_plaintext", NULL};
    static const char *const tls[] = {"ssl", "sasl_ssl", NULL};
    int rc = secret_from_file(ctx, "kafka.sasl_password_file", p->sasl_password_file,
                              &c->kafka_sasl_password);
    if (rc == 0)
        rc = secret_from_file(ctx, "kafka.ssl_key_password_file", p->ssl_key_password_file,
                              &c->kafka_ssl_key_password);
    if (rc == 0)
        rc = kafka_pair(ctx, "kafka.sasl_username",
                        ttb_config_kafka_effective(c, "sasl.username", c->kafka_sasl_username),
                        "kafka.sasl_password",
                        ttb_config_kafka_effective(c, "sasl.password", c->kafka_sasl_password));
    if (rc == 0)
        rc = kafka_pair(ctx, "kafka.ssl_certificate_location",
                        ttb_config_kafka_effective(c, "ssl.certificate.location",
                                                   c->kafka_ssl_certificate_location),
                        "kafka.ssl_key_location",
                        ttb_config_kafka_effective(c, "ssl.key.location",
                                                   c->kafka_ssl_key_location));
    if (rc != 0) return rc;
    const char *protocol =
        ttb_config_kafka_effective(c, "security.protocol", c->kafka_security_protocol);
    const char *mechanism =
        ttb_config_kafka_effective(c, "sasl.mechanisms", c->kafka_sasl_mechanism);
    if (c->kafka_sasl_username != NULL && mechanism == NULL)
        return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx("kafka.sasl_username")],
                    "needs kafka.sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)");
    if (c->kafka_sasl_username != NULL)
        return kafka_needs_protocol(ctx, "kafka.sasl_username", protocol, sasl);
    if (c->kafka_sasl_mechanism != NULL)
        return kafka_needs_protocol(ctx, "kafka.sasl_mechanism", protocol, sasl);
    if (c->kafka_ssl_certificate_location != NULL)
        return kafka_needs_protocol(ctx, "kafka.ssl_certificate_location", protocol, tls);
    return 0;
}

static int finish(load_ctx_t *ctx) {
    config_priv_t *p = ctx->p;
    ttb_config_t *c = &p->pub;
    char q[160];
    int rc = finish_redis(ctx);
    if (rc == 0) rc = finish_kafka(ctx);
    if (rc != 0) return rc;

    const char *towns_origin = ctx->origin[idx("bridge.towns")];
    if (c->ntowns == 0)
        return fail(ctx, TTB_ERR_INVALID, towns_origin, "at least one town is required");
    for (size_t i = 0; i < c->ntowns; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->towns[i], c->towns[j]) == 0)
                return fail(ctx, TTB_ERR_INVALID, towns_origin, "town %s is listed twice",
                            quote(q, sizeof(q), c->towns[i]));
        }
    }
    if (c->default_town != NULL) {
        bool found = false;
        for (size_t i = 0; i < c->ntowns && !found; i++)
            found = strcmp(c->towns[i], c->default_town) == 0;
        if (!found)
            return fail(ctx, TTB_ERR_INVALID, ctx->origin[idx("bridge.default_town")],
                        "%s is not one of bridge.towns", quote(q, sizeof(q), c->default_town));
    } else if (c->ntowns == 1) {
        if ((c->default_town = strdup(c->towns[0])) == NULL)
            return fail_nomem(ctx, "bridge.default_town");
    }

    /* The bridge must never read back what it writes. */
    static const char *const outputs[] = {"kafka.results_topic", "kafka.events_topic",
                                          "kafka.dlq_topic"};
    const char *const topics[] = {c->results_topic, c->events_topic, c->dlq_topic};
    size_t cmd = idx("kafka.commands_topic");
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(c->commands_topic, topics[i]) != 0) continue;
        size_t other = idx(outputs[i]);
        const char *origin =
            ctx->set[cmd] && !ctx->set[other] ? ctx->origin[cmd] : ctx->origin[other];
        return fail(ctx, TTB_ERR_INVALID, origin,
                    "kafka.commands_topic and %s must differ (both %s)", outputs[i],
                    quote(q, sizeof(q), c->commands_topic));
    }
    return 0;
}

int ttb_config_load(const ttb_config_source_t *src, ttb_config_t **out, char *errstr,
                    size_t errstr_size) {
    static const ttb_config_source_t none = {0};
    if (src == NULL) src = &none;
    *out = NULL;
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    load_ctx_t *ctx = calloc(1, sizeof(*ctx));
    config_priv_t *p = calloc(1, sizeof(*p));
    if (ctx == NULL || p == NULL) {
        free(ctx);
        free(p);
        if (errstr != NULL && errstr_size > 0) snprintf(errstr, errstr_size, "out of memory");
        return TTB_ERR_NOMEM;
    }
    ctx->p = p;
    ctx->errstr = errstr;
    ctx->errstr_size = errstr_size;

    char *const *env = src->environ ? src->environ : environ;
    int rc = layer_defaults(ctx);
    if (rc == 0 && src->path != NULL) rc = layer_file(ctx, src->path);
    if (rc == 0 && env != NULL) rc = layer_env(ctx, env);
    if (rc == 0) rc = layer_sets(ctx, src->sets, src->sets ? src->nsets : 0);
    if (rc == 0)
        rc = layer_kafka_sets(ctx, src->kafka_sets, src->kafka_sets ? src->nkafka_sets : 0);
    if (rc == 0) rc = finish(ctx);
    free(ctx);
    if (rc != 0) {
        ttb_config_free(&p->pub);
        return rc;
    }
    *out = &p->pub;
    return 0;
}

void ttb_config_free(ttb_config_t *config) {
    if (config == NULL) return;
    config_priv_t *p = (config_priv_t *)config;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &settings[i];
        if (s->kind == KIND_STRING) {
            wipe_free(*FIELD(p, s->off, char *));
        } else if (s->kind == KIND_LIST) {
            char **list = *FIELD(p, s->off, char **);
            size_t n = *FIELD(p, s->off_count, size_t);
            for (size_t j = 0; j < n; j++) free(list[j]);
            free(list);
        } else if (s->kind == KIND_KV) {
            kv_free(*FIELD(p, s->off, ttb_kv_t *), *FIELD(p, s->off_count, size_t));
        }
    }
    free(p->pub.redis_url_redacted);
    free(p->redis_host);
    wipe_free(p->redis_username);
    wipe_free(p->redis_password);
    explicit_bzero(p, sizeof(*p));
    free(p);
}

void ttb_config_policy(const ttb_config_t *config, ttb_command_policy_t *policy) {
    memset(policy, 0, sizeof(*policy));
    policy->max_record_bytes = config->max_record_bytes;
    policy->default_town = config->default_town;
    policy->towns = (const char *const *)config->towns;
    policy->ntowns = config->ntowns;
    policy->default_cli = config->default_cli;
    policy->max_wait_ms = config->max_wait_ms;
    memcpy(policy->op_denied, config->op_denied, sizeof(policy->op_denied));
}

/* ---- output ---- */

/* A libconfig string literal. */
static void put_string(FILE *fp, const char *s) {
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(fp, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", fp);
        else if (c == '\t')
            fputs("\\t", fp);
        else if (c == '\r')
            fputs("\\r", fp);
        else if (c < 0x20 || c == 0x7f)
            fprintf(fp, "\\x%02x", c);
        else
            fputc(c, fp);
    }
    fputc('"', fp);
}

static void put_int(FILE *fp, int64_t v) {
    /* libconfig reads integers past 32 bits only with an L suffix. */
    fprintf(fp, "%" PRId64 "%s", v, v > INT32_MAX || v < INT32_MIN ? "L" : "");
}

static int64_t get_int(const config_priv_t *p, const setting_t *s) {
    switch (s->kind) {
    case KIND_INT: return *CFIELD(p, s->off, int);
    case KIND_INT64: return *CFIELD(p, s->off, int64_t);
    case KIND_SIZE: return (int64_t)*CFIELD(p, s->off, size_t);
    case KIND_UINT: return *CFIELD(p, s->off, unsigned);
    default: return 0;
    }
}

static void dump_value(FILE *fp, const config_priv_t *p, const setting_t *s) {
    if (is_int_kind(s->kind)) {
        put_int(fp, get_int(p, s));
    } else if (s->kind == KIND_BOOL) {
        fputs(*CFIELD(p, s->off, bool) ? "true" : "false", fp);
    } else if (s->kind == KIND_LEVEL) {
        int level = *CFIELD(p, s->off, int);
        put_string(fp, level >= 0 && level < 4 ? level_names[level] : "info");
    } else if (s->kind == KIND_STRING) {
        const char *v = *CFIELD(p, s->off, str_t);
        if (s->off == AT(pub.redis_url)) v = p->pub.redis_url_redacted;
        if ((s->flags & F_SECRET) && v != NULL) v = "****";
        put_string(fp, v ? v : "");
    } else if (s->kind == KIND_OPS) {
        const bool *denied = CFIELD(p, s->off, bool);
        const char *sep = " ";
        fputc('(', fp);
        for (int op = 0; op < (int)TTB_OP__COUNT; op++) {
            if (!denied[op]) continue;
            fputs(sep, fp);
            put_string(fp, ttb_op_name((ttb_op_t)op));
            sep = ", ";
        }
        fputs(" )", fp);
    } else if (s->kind == KIND_LIST) {
        char *const *list = *CFIELD(p, s->off, strv_t);
        size_t n = *CFIELD(p, s->off_count, size_t);
        fputc('(', fp);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ", " : " ", fp);
            put_string(fp, list[i]);
        }
        fputs(" )", fp);
    } else if (s->kind == KIND_KV) {
        const ttb_kv_t *list = *CFIELD(p, s->off, kvv_t);
        size_t n = *CFIELD(p, s->off_count, size_t);
        fputc('(', fp);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n    " : "\n    ", fp);
            size_t len = strlen(list[i].key) + 1 + 4 + 1;
            const char *value = kv_key_is_secret(list[i].key) ? "****" : list[i].value;
            len += strlen(value);
            char *item = malloc(len);
            if (item != NULL) {
                snprintf(item, len, "%s=%s", list[i].key, value);
                put_string(fp, item);
                explicit_bzero(item, len);
                free(item);
            } else {
                put_string(fp, list[i].key);
            }
        }
        fputs(n ? "\n  )" : " )", fp);
    }
}

void ttb_config_dump(const ttb_config_t *config, FILE *fp) {
    const config_priv_t *p = (const config_priv_t *)config;
    fputs("# tinytown-bridge configuration: effective values, secrets shown as \"****\"\n", fp);
    size_t open = 0; /* length of the open section's name; 0 = none */
    const char *section = NULL;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &settings[i];
        size_t slen = section_len(s->name);
        if (section == NULL || slen != open || strncmp(section, s->name, slen) != 0) {
            if (section != NULL) fputs("};\n\n", fp);
            fprintf(fp, "%.*s = {\n", (int)slen, s->name);
            section = s->name;
            open = slen;
        }
        fprintf(fp, "  %s = ", s->name + slen + 1);
        dump_value(fp, p, s);
        fputs(";\n", fp);
    }
    if (section != NULL) fputs("};\n", fp);
}

static void help_type(FILE *fp, const setting_t *s) {
    switch (s->kind) {
    case KIND_STRING: fputs(s->flags & F_OPTIONAL ? "string, optional" : "string", fp); break;
    case KIND_LEVEL: fputs("string: debug, info, warn or error", fp); break;
    case KIND_BOOL: fputs("boolean", fp); break;
    case KIND_LIST: fputs("list of strings", fp); break;
    case KIND_OPS: fputs("list of op names", fp); break;
    case KIND_KV: fputs("list of \"name=value\" strings", fp); break;
    default: fprintf(fp, "integer, %" PRId64 "..%" PRId64, s->min, s->max); break;
    }
}

static void help_default(FILE *fp, const setting_t *s) {
    if (is_int_kind(s->kind) || s->kind == KIND_BOOL) {
        fputs(s->def, fp);
    } else if (is_list_kind(s->kind)) {
        fputs(s->def[0] ? "( " : "( )", fp);
        if (s->def[0]) {
            put_string(fp, s->def);
            fputs(" )", fp);
        }
    } else if (s->def[0] == '\0') {
        fputs("(unset)", fp);
    } else {
        put_string(fp, s->def);
    }
}

/* Writes @p text in lines of at most @p width columns, each indented. */
static void put_wrapped(FILE *fp, const char *text, int indent, int width) {
    const char *p = text;
    while (*p != '\0') {
        int room = width - indent;
        int len = (int)strlen(p);
        if (len > room) {
            len = room;
            while (len > 0 && p[len] != ' ') len--;
            if (len == 0) len = (int)strcspn(p, " "); /* a word longer than a line */
        }
        fprintf(fp, "%*s%.*s\n", indent, "", len, p);
        p += len;
        while (*p == ' ') p++;
    }
}

void ttb_config_help(FILE *fp) {
    fputs("# Settings of tinytown-bridge; in the file: section = { name = value; };\n"
          "# Applied in order: defaults, the --config file, the environment,\n"
          "# --set section.name=value, then -X property=value. Empty environment\n"
          "# variables count as unset. Lists in the environment and --set are\n"
          "# comma-separated; booleans take true/false, yes/no, on/off or 1/0.\n"
          "# " RDKAFKA_ENV_PREFIX "<NAME> sets the librdkafka property <name> ('_' read\n"
          "# as '.', lowercased), e.g. " RDKAFKA_ENV_PREFIX "SASL_PASSWORD.\n",
          fp);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting_t *s = &settings[i];
        fprintf(fp, "\n%s\n    type:    ", s->name);
        help_type(fp, s);
        fputs("\n    default: ", fp);
        help_default(fp, s);
        fprintf(fp, "\n    env:     %s\n", s->env);
        put_wrapped(fp, s->help, 4, 80);
    }
}
