/*
 * cli_stubs.c - subcommands whose module is not built yet. Each one moves to its own file when
 * its issue lands; until then it says so and exits 2.
 */
#include "cli.h"

int cli_echo(int argc, char **argv)
{
    return cli_not_built("echo", "the DICOM network adapter (dicom/)");
}
