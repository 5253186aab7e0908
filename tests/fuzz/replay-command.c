/* SPDX-License-Identifier: MIT */
/*
 * Replays a fuzz corpus through the fuzz target without libFuzzer, so that
 * every build (not only clang fuzz builds) runs the seeds and any crash
 * input saved there, under whatever sanitizers the build uses.
 * Usage: replay-command DIR — every regular file in DIR is one input.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* @returns the file's bytes (caller frees) and its size, or NULL. */
static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc(buf, cap);
            if (grown == NULL) break;
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    bool failed = ferror(f) || buf == NULL;
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    *size = len;
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *dir = opendir(argv[1]);
    if (dir == NULL) {
        perror(argv[1]);
        return 1;
    }
    int count = 0, failures = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", argv[1], ent->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        size_t size = 0;
        uint8_t *data = read_file(path, &size);
        if (data == NULL) {
            fprintf(stderr, "cannot read %s\n", path);
            failures++;
            continue;
        }
        /* A crash aborts the whole run; print the name first so it is known. */
        printf("%s\n", ent->d_name);
        fflush(stdout);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        count++;
    }
    closedir(dir);
    printf("%d inputs replayed\n", count);
    /* An empty corpus would make this test pass without testing anything. */
    return failures == 0 && count > 0 ? 0 : 1;
}
