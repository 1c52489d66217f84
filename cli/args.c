/* cli args: the plan options shared by kvpr sim, kvpr plan and kvpr-engine run. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

/* Parses the options shared by sim-like commands into a plan; returns -1 on success, or an exit code. */
int cli_parse_plan(int argc, char **argv, kv_plan *pl, const char **model, const char **hw, const char **trace,
                   const char **dbpath, int *js, const char *help) {
    return cli_parse_plan_for(NULL, NULL, argc, argv, pl, model, hw, trace, dbpath, js, help);
}

int cli_parse_plan_for(const char *cmd, const char *const *unused, int argc, char **argv, kv_plan *pl, const char **model,
                       const char **hw, const char **trace, const char **dbpath, int *js, const char *help) {
    kv_status st;
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},  {"hw", 1, 0, 'w'},       {"batch", 1, 0, 'b'},   {"gbs", 1, 0, 'B'},
        {"prompt", 1, 0, 'p'}, {"gen", 1, 0, 'g'},      {"mode", 1, 0, 'M'},    {"policy", 1, 0, 'P'},
        {"split", 1, 0, 'l'},  {"nb", 1, 0, 'n'},       {"prefetch", 1, 0, 'f'}, {"keep-act", 0, 0, 'k'},
        {"wkv-first", 0, 0, 'W'}, {"pageable", 0, 0, 'G'}, {"paper-model", 0, 0, 'X'}, {"layers", 1, 0, 'L'},
        {"trace", 1, 0, 't'},  {"db", 1, 0, 'd'},       {"no-db", 0, 0, 'N'},   {"json", 0, 0, 'j'},
        {"percent", 1, 0, 'c'}, {"preset", 1, 0, 'R'}, {"no-prefill", 0, 0, 'F'},
        {"compress", 1, 0, 'Z'}, {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c, nb_set = 0, idx = -1, batch = 0, gbs = 0;
    /* A preset sets the layout first; options given alongside it override what it set. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset")) {
            kv_preset ps;
            if ((st = kv_preset_parse(argv[i + 1], &ps))) return cli_fail(st);
            kv_plan_preset(pl, ps);
        } else if (!strncmp(argv[i], "--preset=", 9)) {
            kv_preset ps;
            if ((st = kv_preset_parse(argv[i] + 9, &ps))) return cli_fail(st);
            kv_plan_preset(pl, ps);
        }
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        /* an option this command would ignore is an error: a silently ignored option is a wrong answer */
        if (c != 'h' && c != '?' && c != ':' && idx >= 0 && unused)
            for (const char *const *u = unused; *u; u++)
                if (!strcmp(*u, opts[idx].name)) return cli_usage("--%s is not used by '%s' (see --help)", *u, cmd);
        idx = -1;
        switch (c) {
        case 'm': *model = optarg; break;
        case 'w': *hw = optarg; break;
        case 'b': if ((st = cli_int("--batch", optarg, 1, 1 << 20, &batch))) return cli_fail(st); break;
        case 'B': if ((st = cli_int("--gbs", optarg, 1, 1 << 20, &gbs))) return cli_fail(st); break;
        case 'p': if ((st = cli_int("--prompt", optarg, 1, 1 << 24, &pl->prompt))) return cli_fail(st); break;
        case 'g': if ((st = cli_int("--gen", optarg, 2, 1 << 24, &pl->gen))) return cli_fail(st); break;
        case 'M': if ((st = kv_mode_parse(optarg, &pl->mode))) return cli_fail(st); break;
        case 'P': if ((st = kv_policy_parse(optarg, &pl->policy))) return cli_fail(st); break;
        case 'l': if ((st = cli_int("--split", optarg, 0, 1 << 25, &pl->split))) return cli_fail(st); break;
        case 'n': if ((st = cli_int("--nb", optarg, 1, 4096, &pl->nb))) return cli_fail(st); nb_set = 1; break;
        case 'f': if ((st = cli_int("--prefetch", optarg, 1, 64, &pl->prefetch))) return cli_fail(st); break;
        case 'k': pl->keep_act = 1; break;
        case 'W': pl->wkv_first = 1; break;
        case 'G': pl->pageable = 1; break;
        case 'X': pl->paper_model = 1; break;
        case 'L': if ((st = cli_int("--layers", optarg, 0, 1 << 16, &pl->layers))) return cli_fail(st); break;
        case 't': *trace = optarg; break;
        case 'd': *dbpath = optarg; break;
        case 'N': *dbpath = NULL; break;
        case 'j': *js = 1; break;
        case 'c': if ((st = kv_percent_parse(optarg, &pl->percent))) return cli_fail(st); break;
        case 'R': break; /* applied above */
        case 'F': pl->no_prefill = 1; break;
        case 'Z': if ((st = kv_compress_parse(optarg, &pl->compress))) return cli_fail(st); break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("unexpected argument '%s'", argv[optind]);
    /* --gbs is another name for --batch: two different values have no single meaning */
    if (batch && gbs && batch != gbs) return cli_usage("--batch %d and --gbs %d disagree (--gbs is another name for --batch)", batch, gbs);
    if (batch || gbs) pl->batch = batch ? batch : gbs;
    if (!*model || !*hw || !pl->batch || !pl->prompt || !pl->gen)
        return cli_usage("--model%s, --batch, --prompt and --gen are required (see --help)", *hw ? "" : ", --hw");
    /* only the prompt's activations are stored unless --keep-act keeps the new tokens' too */
    if (pl->split > pl->prompt + (pl->keep_act ? pl->gen : 0))
        return cli_usage("--split %d exceeds --prompt %d%s", pl->split, pl->prompt,
                         pl->keep_act ? " + --gen" : " (only the prompt's activations are stored; --keep-act keeps new tokens')");
    if (pl->mode == KV_MODE_THROUGHPUT && !nb_set) pl->nb = 8;
    return -1;
}

