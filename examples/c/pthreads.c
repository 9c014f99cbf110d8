/* pthreads through eremite's Linux ABI: a mutex and a condition variable
 * shared by 8 threads, thread-local storage, joins with results, 1000
 * threads created and joined one after another (clone, futex, exit), and
 * thread names (prctl) as Linux keeps them. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static long counter;
static int finished;
static __thread int own = 7;

static void *worker(void *arg) {
    own = (int)(long)arg;
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    finished++;
    pthread_cond_broadcast(&done);
    pthread_mutex_unlock(&lock);
    return (void *)(long)own;
}

/* A new thread has its creator's name until it sets its own; a name is
 * cut to 15 bytes. */
static void *namer(void *main_name) {
    char name[16] = {0};
    prctl(PR_GET_NAME, name);
    int inherited = strcmp(name, main_name) == 0;
    prctl(PR_SET_NAME, "a-much-too-long-name");
    prctl(PR_GET_NAME, name);
    int cut = strcmp(name, "a-much-too-long") == 0;
    pthread_setname_np(pthread_self(), "worker");
    pthread_getname_np(pthread_self(), name, sizeof name);
    return (void *)(long)(inherited && cut && strcmp(name, "worker") == 0);
}

int main(void) {
    char main_name[16] = {0};
    prctl(PR_GET_NAME, main_name);
    pthread_t t;
    void *named = 0;
    if (pthread_create(&t, 0, namer, main_name) || pthread_join(t, &named))
        return 1;
    printf("main is named %.8s, names %s\n", main_name, named ? "kept" : "WRONG");
    pthread_t threads[8];
    for (long i = 0; i < 8; i++)
        if (pthread_create(&threads[i], 0, worker, (void *)i))
            return 1;
    pthread_mutex_lock(&lock);
    while (finished < 8)
        pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    long sum = 0;
    for (int i = 0; i < 8; i++) {
        void *result;
        pthread_join(threads[i], &result);
        sum += (long)result;
    }
    printf("counter=%ld sum=%ld own=%d\n", counter, sum, own);
    int joined = 0;
    for (int i = 0; i < 1000; i++) {
        pthread_t t;
        if (pthread_create(&t, 0, worker, 0) || pthread_join(t, 0))
            break;
        joined++;
    }
    printf("created and joined %d threads\n", joined);
    return 0;
}
