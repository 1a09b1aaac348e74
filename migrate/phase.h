/* SPDX-License-Identifier: MIT */
/*
 * The phases of one VM's migration, in the order the map gives them
 * (../shared/design/architecture.md, "One migration, phase by phase").
 */
#ifndef KWM_PHASE_H
#define KWM_PHASE_H

enum kwm_phase {
	KWM_PH_PREFLIGHT,
	KWM_PH_STORAGE,		/* NBD export + blockdev-mirror until READY */
	KWM_PH_QUIESCE,		/* ‖ symvirt quiesce */
	KWM_PH_UNPLUG,		/* device_del of the source HCA */
	KWM_PH_RESUME_SRC,	/* ‖ the job goes on at the source without the HCA */
	KWM_PH_MEMORY,		/* migrate, pause-before-switchover, mirror done */
	KWM_PH_SWITCHOVER,	/* ‖ nbd-server-stop, device_add, cont */
	KWM_PH_RESUME,		/* ‖ symvirt at the destination */
	KWM_PH_FINISH,		/* quit the source */
	KWM_PH_ROLLBACK,
	KWM_PH__COUNT
};

const char *kwm_phase_name(enum kwm_phase p);

#endif
