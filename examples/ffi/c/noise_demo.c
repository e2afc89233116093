/* The smallest complete use of the acestep_runtime C API: check the ABI, read the version, draw
 * seeded noise (bit-identical to torch.randn with the same seed), and read a failed call's error.
 *
 * From the root of a release folder (Linux; on macOS use DYLD_LIBRARY_PATH):
 *   cc -std=c11 -Wall -Wextra -Werror -I include examples/c/noise_demo.c -L lib -lacestep_runtime -o noise_demo
 *   LD_LIBRARY_PATH=lib ./noise_demo
 * In the source tree use -I include -L runtime_rust_dll/target/release instead.
 */
#include <stdio.h>

#include "acestep_runtime.h"

/* Prints this thread's last error message and returns `status`. */
static int report(const char *what, AceStatus status) {
    char *message = NULL;
    if (ace_last_error(&message) == ACE_STATUS_OK) {
        fprintf(stderr, "%s failed with status %d: %s\n", what, (int)status, message);
        ace_string_free(message);
    }
    return (int)status;
}

int main(void) {
    if (ace_abi_version() != ACE_ABI_VERSION) {
        fprintf(stderr, "library ABI v%u, header ABI v%d\n", ace_abi_version(), ACE_ABI_VERSION);
        return 1;
    }

    char *version = NULL;
    AceStatus status = ace_version_string(&version);
    if (status != ACE_STATUS_OK) return report("ace_version_string", status);
    printf("acestep_runtime %s (ABI v%u)\n", version, ace_abi_version());
    ace_string_free(version);

    /* torch.randn(2, 3, generator=torch.Generator().manual_seed(42)) */
    const size_t shape[2] = {2, 3};
    float noise[6];
    int64_t seed_used = 0;
    status = ace_noise_fill(NULL, 42, shape, 2, noise, 6, &seed_used);
    if (status != ACE_STATUS_OK) return report("ace_noise_fill", status);
    printf("seed %lld:", (long long)seed_used);
    for (size_t i = 0; i < 6; i++) printf(" %.9g", noise[i]);
    printf("\n");

    /* A bad call returns a status and leaves a message; nothing is written to `noise`. */
    const size_t bad_shape[2] = {2, 0};
    status = ace_noise_fill(NULL, 42, bad_shape, 2, noise, 6, &seed_used);
    if (status == ACE_STATUS_OK) {
        fprintf(stderr, "a zero dimension was accepted\n");
        return 1;
    }
    char *message = NULL;
    if (ace_last_error(&message) != ACE_STATUS_OK) return 1;
    printf("expected error %d: %s\n", (int)status, message);
    ace_string_free(message);
    return 0;
}
