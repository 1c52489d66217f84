/* kvpr search: policy, placement, batch and split chosen together (sched/search.h). */
#ifndef KV_CMD_SEARCH_H
#define KV_CMD_SEARCH_H

int cmd_search(int argc, char **argv);

#endif
