/* SPDX-License-Identifier: MIT */
/*
 * `kawarimi lab ...`: the one-machine two-site lab (docs/lab.md).
 *
 * The lab is a set of shell scripts in the source tree's lab/ (QEMU
 * command lines, namespaces and tbf are shell's job); this subcommand finds
 * lab/lab.sh and execs it.  Where: $KAWARIMI_LAB (the lab/ directory), else
 * the source directory meson recorded in the build directory this binary
 * was built in (BUILD/meson-info/meson-info.json).  The script is told that
 * build directory (KAWARIMI_BUILD) so it uses this build's hub, relay and
 * guest binaries.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "subcommands.h"

/* The build directory: two levels above BUILD/migrate/kawarimi. */
static int build_dir(char *out, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n < 0)
		return -1;
	exe[n] = '\0';
	for (int i = 0; i < 2; i++) {
		slash = strrchr(exe, '/');
		if (!slash || slash == exe)
			return -1;
		*slash = '\0';
	}
	if ((size_t)snprintf(out, size, "%s", exe) >= size)
		return -1;
	return 0;
}

/* SOURCE/lab from BUILD/meson-info/meson-info.json. */
static int lab_dir_from_build(const char *build, char *out, size_t size)
{
	char info[PATH_MAX];
	json_object *root, *dirs, *src;
	int rc = -1;

	if ((size_t)snprintf(info, sizeof(info), "%s/meson-info/meson-info.json", build) >= sizeof(info))
		return -1;
	root = json_object_from_file(info);
	if (!root)
		return -1;
	if (json_object_object_get_ex(root, "directories", &dirs) &&
	    json_object_object_get_ex(dirs, "source", &src) &&
	    json_object_is_type(src, json_type_string) &&
	    (size_t)snprintf(out, size, "%s/lab", json_object_get_string(src)) < size)
		rc = 0;
	json_object_put(root);
	return rc;
}

int cmd_lab(int argc, char *argv[])
{
	char build[PATH_MAX] = "", lab[PATH_MAX], script[PATH_MAX + 16];
	const char *env = getenv("KAWARIMI_LAB");
	char **args;

	if (build_dir(build, sizeof(build)) == 0 && !getenv("KAWARIMI_BUILD"))
		setenv("KAWARIMI_BUILD", build, 1);
	if (env && *env) {
		snprintf(lab, sizeof(lab), "%s", env);
	} else if (!build[0] || lab_dir_from_build(build, lab, sizeof(lab))) {
		fprintf(stderr, "%s lab: cannot find the lab scripts (no meson-info in '%s'); "
			"set KAWARIMI_LAB to the source tree's lab/ directory\n", prog, build);
		return 1;
	}
	snprintf(script, sizeof(script), "%s/lab.sh", lab);
	if (access(script, X_OK)) {
		fprintf(stderr, "%s lab: '%s' is not there or not executable (%s); "
			"set KAWARIMI_LAB to the source tree's lab/ directory\n",
			prog, script, strerror(errno));
		return 1;
	}
	/* lab.sh gets our arguments after the subcommand name. */
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (!args) {
		fprintf(stderr, "%s lab: out of memory\n", prog);
		return 1;
	}
	args[0] = script;
	for (int i = 1; i < argc; i++)
		args[i] = argv[i];
	execv(script, args);
	fprintf(stderr, "%s lab: cannot run '%s': %s\n", prog, script, strerror(errno));
	free(args);
	return 1;
}
