/* kvpr: the command-line tool. Needs no GPU and no CUDA runtime. */
#include <stdio.h>
#include <string.h>
#include "../core/db.h"
#include "cli.h"
#include "cmd_search.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvpr COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  model list | show NAME|config.json [--json]   model shapes and derived sizes\n"
            "  hw list | show NAME|profile.json [--json]     hardware profiles and provenance\n"
            "  cost --model M --hw H --batch B --ctx S       per-layer costs and the paper's split\n"
            "  sim --model M --hw H --batch B --prompt P --gen G [--policy P] [--mode M]\n"
            "                                                 simulate a decode plan (timeline, metrics, trace)\n"
            "  plan --model M --hw H --batch B --prompt P --gen G [--scheduler paper|pipelined|dynamic]\n"
            "                                                 choose the split with a linear program\n"
            "  search --model M --hw H --prompt P --gen G [--objective generation|decode|latency]\n"
            "                                                 choose policy, placement, batch and split together (also plan --search)\n"
            "  validate [--grid FILE]                         each scheduler's regret against the simulated best split\n"
            "                                                 (validate --search: the search's regret against brute force)\n"
            "  run EXPERIMENT [--jobs N] [--shard K/N]        run a sweep of experiments/, print its tables, draw its figures\n"
            "  report EXPERIMENT                              tables and figures from results.db\n"
            "  merge OUT.db SHARD.db...                       merge shard databases\n"
            "  calibrate --from DB|SQL --base PROFILE --out P.json   fit a profile to measured timings\n"
            "  compare --profile PROFILE [--measured all|IDS]   the simulator's error against measured engine runs\n"
            "  version                                        print the version\n"
            "\n"
            "Run 'kvpr COMMAND --help' (or -h) for a command's options. Exit status: 0 ok, 2 bad input, 1 other errors.\n"
            "\n"
            "Names: models and hardware profiles ignore case; a typo gets 'did you mean' and the valid names.\n"
            "  --hw PROFILE@LINK     a profile with its host link replaced (e.g. h100-sxm@gen3; links in hwmodel/links)\n"
            "  KVPR_PROFILES=D1:D2   directories searched for PROFILE.json before the built-in profiles\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "-h") || !strcmp(c, "--help") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(c, "version") || !strcmp(c, "--version")) {
        printf("kvpr %s\n", kvpr_version());
        return 0;
    }
    /* -h is --help for every command: some parse only the long form */
    static char long_help[] = "--help";
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h")) argv[i] = long_help;
    if (!strcmp(c, "model")) return cmd_model(argc - 1, argv + 1);
    if (!strcmp(c, "hw")) return cmd_hw(argc - 1, argv + 1);
    if (!strcmp(c, "cost")) return cmd_cost(argc - 1, argv + 1);
    if (!strcmp(c, "sim")) return cmd_sim(argc - 1, argv + 1);
    if (!strcmp(c, "plan")) return cmd_plan(argc - 1, argv + 1);
    if (!strcmp(c, "search")) return cmd_search(argc - 1, argv + 1);
    if (!strcmp(c, "validate")) return cmd_validate(argc - 1, argv + 1);
    if (!strcmp(c, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(c, "report")) return cmd_report(argc - 1, argv + 1);
    if (!strcmp(c, "merge")) return cmd_merge(argc - 1, argv + 1);
    if (!strcmp(c, "calibrate")) return cmd_calibrate(argc - 1, argv + 1);
    if (!strcmp(c, "compare")) return cmd_compare(argc - 1, argv + 1);
    return cli_usage("unknown command '%s' (see 'kvpr --help')", c);
}
