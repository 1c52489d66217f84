/* datadir: where profiles, links and experiments are read from. */
#ifndef KV_DATADIR_H
#define KV_DATADIR_H

/* $KVPR_DATADIR if set; else PREFIX/share/kvpr when this binary runs from PREFIX/bin after
 * 'make install PREFIX=...'; else the source tree the binary was built from. */
const char *kv_datadir(void);

#endif
