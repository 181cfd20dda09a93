/* A minimal assertion helper for the C unit tests: CHECK prints the failed
 * expression with its line and makes the test exit non-zero. It may be used
 * from several threads at once (the count is atomic). */
#ifndef AGENTMESH_SERVICES_COMMON_TEST_UTIL_H
#define AGENTMESH_SERVICES_COMMON_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static int test_failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __atomic_add_fetch(&test_failures, 1, __ATOMIC_RELAXED);           \
        }                                                                      \
    } while (0)

#define RUN(fn)                                                                \
    do {                                                                       \
        int before_ = test_failures;                                           \
        fn();                                                                  \
        fprintf(stderr, "%s %s\n", test_failures == before_ ? "ok  " : "FAIL", \
                #fn);                                                          \
    } while (0)

#define TEST_EXIT() (test_failures == 0 ? 0 : 1)

#endif
