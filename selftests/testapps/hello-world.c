// SPDX-License-Identifier: MIT
/* hello-world: the smallest program that allocates (stdio's buffer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	char *greeting = malloc(32);
	if (!greeting)
		return 1;
	strcpy(greeting, "Hello, world!");
	printf("%s\n", greeting);
	free(greeting);
	return 0;
}
