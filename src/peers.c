/* SPDX-License-Identifier: MIT */
/*
 * The group's agreement check (see peers.h). The line lists each setting as
 * name=value in a fixed order, with lists sorted, so two bridges configured
 * alike write the same bytes whatever the order of their configuration.
 */
#include "tinytown_bridge/peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/command.h"
#include "tinytown_bridge/error.h"

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *ttb_peers_settings(const ttb_config_t *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp) return NULL;
    const char **towns = malloc(sizeof(*towns) * (c->ntowns ? c->ntowns : 1));
    if (!towns) {
        fclose(fp);
        free(buf);
        return NULL;
    }
    for (size_t i = 0; i < c->ntowns; i++) towns[i] = c->towns[i];
    qsort(towns, c->ntowns, sizeof(*towns), cmp_str);
    fputs("towns=", fp);
    for (size_t i = 0; i < c->ntowns; i++) fprintf(fp, "%s%s", i ? "," : "", towns[i]);
    free(towns);
    fprintf(fp, " default_town=%s denied_ops=", c->default_town ? c->default_town : "");
    bool first = true; /* ops in their table order: a fixed order */
    for (int op = 0; op < TTB_OP__COUNT; op++) {
        if (!c->op_denied[op]) continue;
        fprintf(fp, "%s%s", first ? "" : ",", ttb_op_name((ttb_op_t)op));
        first = false;
    }
    fprintf(fp, " max_record_bytes=%zu max_wait_ms=%lld default_cli=%s", c->max_record_bytes,
            (long long)c->max_wait_ms, c->default_cli ? c->default_cli : "");
    /* One bridge without transactions breaks the guarantee for the group. */
    if (c->exactly_once) fputs(" exactly_once=true", fp);
    if (fclose(fp) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int ttb_peers_check(ttb_store_t *store, const char *group, const char *instance,
                    const char *settings, int64_t now_ms, char *what, size_t what_size) {
    char key[TTB_KEY_BUFSZ];
    ttb_key_bridges(key, group);
    char *value = NULL;
    if (asprintf(&value, "%lld %s", (long long)now_ms, settings) < 0) return TTB_ERR_NOMEM;
    int rc = ttb_store_appendf(store, "HSET %s %s %s", key, instance, value);
    free(value);
    if (!rc) rc = ttb_store_appendf(store, "HGETALL %s", key);
    redisReply *set = NULL, *all = NULL;
    if (!rc) rc = ttb_store_reply(store, &set);
    if (!rc) rc = ttb_store_reply(store, &all);
    int result = rc;
    if (!rc && (set->type == REDIS_REPLY_ERROR || all->type != REDIS_REPLY_ARRAY)) {
        snprintf(what, what_size, "cannot read %s: %s", key,
                 set->type == REDIS_REPLY_ERROR ? set->str : "unexpected reply");
        result = TTB_ERR_PROTO;
    }
    for (size_t i = 0; result == 0 && i + 1 < all->elements; i += 2) {
        const redisReply *f = all->element[i], *v = all->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        if (strcmp(f->str, instance) == 0) continue;
        char *end;
        long long seen = strtoll(v->str, &end, 10);
        if (*end != ' ') continue;
        if (now_ms - seen > TTB_PEERS_LIVE_MS) {
            /* Long gone (a crash): forget it, so the hash does not grow. */
            if (now_ms - seen > 10 * TTB_PEERS_LIVE_MS &&
                ttb_store_appendf(store, "HDEL %s %s", key, f->str) == 0)
                (void)ttb_store_skip(store, 1);
            continue;
        }
        if (strcmp(end + 1, settings) != 0) {
            snprintf(what, what_size, "bridge %s of this group has \"%s\", this one \"%s\"",
                     f->str, end + 1, settings);
            result = 1;
        }
    }
    if (set) freeReplyObject(set);
    if (all) freeReplyObject(all);
    return result;
}

void ttb_peers_leave(ttb_store_t *store, const char *group, const char *instance) {
    redisReply *r;
    if (ttb_store_command(store, &r, "HDEL ttb:bridges:%s %s", group, instance) == 0)
        freeReplyObject(r);
}
