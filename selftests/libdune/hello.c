/* A plain dynamically linked program for the preload test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	char *p = malloc(1 << 20);
	memset(p, 'x', 1 << 20);
	printf("hello, world (%d args, %c)\n", argc, p[12345]);
	free(p);
	return argc > 1 ? atoi(argv[1]) : 0;
}
