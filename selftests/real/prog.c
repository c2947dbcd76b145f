/* A small C file for gcc to compile under Dangless. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
	int key;
	struct node *left, *right;
};

static struct node *insert(struct node *t, int key)
{
	if (!t) {
		t = calloc(1, sizeof(*t));
		t->key = key;
	} else if (key < t->key) {
		t->left = insert(t->left, key);
	} else {
		t->right = insert(t->right, key);
	}
	return t;
}

static int depth(const struct node *t)
{
	if (!t)
		return 0;
	int l = depth(t->left), r = depth(t->right);
	return 1 + (l > r ? l : r);
}

static long sum(const struct node *t)
{
	return t ? t->key + sum(t->left) + sum(t->right) : 0;
}

int main(void)
{
	struct node *root = NULL;
	unsigned x = 1;
	for (int i = 0; i < 1000; i++) {
		x = x * 1103515245 + 12345;
		root = insert(root, (int)(x % 100000));
	}
	printf("depth %d sum %ld\n", depth(root), sum(root));
	return 0;
}
